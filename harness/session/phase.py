"""`probe` and `timing` as runs of their own: the model prepared, the phase run, and with a receipts folder a
phase receipt written and verified as a benchmark's is.

A probe receipt counts the probe's own kernel calls (each candidate once for its error, then once per timed
sample); a timing receipt counts the phase's prefill and decode steps. Either verifies with the gates of a
benchmark receipt; the gates that need a benchmark phase are not applicable to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.generate import SamplingParams
from engine.model import KERNEL_MODES
from engine.strict import resolve_strict
from engine.trace import Trace
from harness.errors import HarnessError
from harness.phases.probe import probe_variants, run_probe
from harness.phases.timing import run_timing
from harness.phases.workload import DEFAULT_PROMPT, prompt_ids
from harness.progress import SILENT, Progress
from harness.receipts.build import build_phase_receipt, model_section
from harness.receipts.checks import Evidence, ModelFacts
from harness.receipts.digest import file_digest
from harness.receipts.files import utc_timestamp, write_receipt
from harness.receipts.verify import VerificationResult, verify
from harness.runtime import interrupts
from harness.session.model import check_retune, model_source, ready_model

PHASES = ("probe", "timing")


@dataclass(frozen=True)
class PhaseRequest:
    """The options of one `probe` or `timing` call; `steps`, `prompt` and `prompt_tokens` are timing's."""

    phase: str
    model: Path | None = None
    preset: str = "2b-4t"
    fmt: str = "i2s"
    arch: str = "bitnet-b1.58"
    model_seed: int = 0
    kernel: str = "auto"
    retune: bool = False
    threads: int | None = None
    strict_loader: bool = False
    receipts_dir: Path | None = None
    steps: int = 3
    prompt: str | None = None
    prompt_tokens: int | None = None

    def validate(self) -> None:
        """HarnessError naming the first bad value, before anything is loaded or written."""
        if self.phase not in PHASES:
            raise HarnessError(f"unknown phase {self.phase!r}; choose from {', '.join(PHASES)}")
        if self.kernel not in KERNEL_MODES:
            raise HarnessError(
                f"--kernel: unknown kernel {self.kernel!r}; choose from {', '.join(KERNEL_MODES)}"
            )
        check_retune(self.retune, [self.kernel])
        for option, value in (("--steps", self.steps), ("--prompt-tokens", self.prompt_tokens or 1)):
            if value < 1:
                raise HarnessError(f"{option} must be >= 1 (got {value})")
        if self.model is not None and not self.model.is_file():
            raise HarnessError(f"model file {self.model} does not exist or is not a file")


@dataclass(frozen=True)
class PhaseOutcome:
    """The phase's section, and the receipt written for it (with its verification) when a folder was given."""

    section: dict[str, Any]
    receipt: dict[str, Any] | None = None
    path: Path | None = None
    verification: VerificationResult | None = None

    @property
    def exit_code(self) -> int:
        """0, or 1 when the receipt written fails verification (as `benchmark`)."""
        return 1 if self.verification is not None and not self.verification.ok else 0


def run_phase_session(request: PhaseRequest, progress: Progress = SILENT) -> PhaseOutcome:
    """Prepare the model, run the phase, and write its receipt under `receipts_dir` when one is given."""
    request.validate()
    started_at = utc_timestamp()
    source = model_source(
        request.model, request.preset, request.fmt, request.arch, request.model_seed, progress
    )
    strict = True if request.strict_loader else None
    loaded = ready_model(source, request.kernel, request.threads, strict, progress, request.retune)
    model = loaded.model
    workload: dict[str, Any] = {}
    if request.phase == "probe":
        trace = Trace()
        with progress.tasks() as board:
            task = board.add_task("phase 1: probe", total=None)
            section = run_probe(model, lambda what: board.update(task, description=f"probe: {what}"), trace)
            board.update(task, total=1, completed=1, description="phase 1: probe")
        interrupts.raise_if_swallowed()  # the probe loads the other kernel families
        counts, variants = trace.snapshot(), probe_variants(section)
    else:
        text = request.prompt or DEFAULT_PROMPT
        ids = prompt_ids(model.tokenizer, text, request.prompt_tokens)
        with progress.status(f"phase 2: timing {request.steps} decode steps"):
            section = run_timing(model, ids, request.steps, SamplingParams())
        counts, variants = model.trace.snapshot(), model.kernel_variants()
        workload = {"prompt_text": text, "prompt": ids, "params": SamplingParams()}
    if request.receipts_dir is None:
        return PhaseOutcome(section)
    section_of_model = model_section(model.file, str(source.path), file_digest(source.path))
    receipt = build_phase_receipt(
        started_at=started_at,
        model=model,
        model_section=section_of_model,
        phase=request.phase,
        section=section,
        counts=counts,
        variants=variants,
        strict=resolve_strict(strict),
        jit_seconds=loaded.jit_seconds,
        **workload,
    )
    facts = ModelFacts(str(source.path), dict(section_of_model), model.weight_bytes_per_token)
    result = verify(receipt, Evidence(model=facts))
    path = write_receipt(receipt, request.receipts_dir, schema_checked=result.schema_ok)
    return PhaseOutcome(section, receipt, path, result)
