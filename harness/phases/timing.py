"""Phase 2, per-token latency: after the prompt, N decode steps timed stage by stage and by layer."""

import time
from typing import Any

from engine.generate import Sampler, SamplingParams
from engine.model import Model
from harness.errors import HarnessError
from harness.receipts.summary import percentiles

STAGES = ("embed", "forward", "logits", "sample")


def run_timing(model: Model, prompt: list[int], steps: int, params: SamplingParams) -> dict[str, Any]:
    """The receipt's `phases.timing` section: raw per-step stage seconds and their percentiles. Afterwards
    the model's trace counts exactly this phase's work: one prefill of the prompt and `steps` decode steps."""
    if steps < 1:
        raise HarnessError(f"--steps must be >= 1 (got {steps})")
    sampler = Sampler(model.config.vocab_size, params)
    model.reset()
    model.trace.reset()
    logits = model.prefill(prompt)
    token = sampler(logits)
    rows: list[dict[str, Any]] = []
    for _ in range(steps):
        profile: dict[str, Any] = {}
        logits = model.decode(token, profile)
        start = time.perf_counter()
        token = sampler(logits)
        profile["sample"] = time.perf_counter() - start
        rows.append({stage: profile[stage] for stage in STAGES} | {"layers": list(profile["layers"])})
    model.reset()
    summary = {stage: percentiles([row[stage] for row in rows]) for stage in STAGES}
    summary["total"] = percentiles([sum(row[stage] for stage in STAGES) for row in rows])
    return {"steps": rows, "percentiles": summary}
