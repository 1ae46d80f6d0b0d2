"""Phase 3, the full benchmark: warm-up repetitions, then measured generations with their raw samples.

The engine's trace is reset after the warm-up, so the kernel counters cover exactly the measured repetitions.
`repetition_row` is the one shape of a measured generation, the engine's and a peer's alike.
"""

import time
from collections.abc import Callable, Sequence
from typing import Any

from engine.generate import SamplingParams, generate
from engine.model import Model
from harness.errors import HarnessError
from harness.receipts.digest import token_digest
from harness.receipts.summary import decode_tokens_per_second, percentiles

RepetitionFn = Callable[[int, int], None]


def repetition_row(
    prefill_seconds: float, ttft_seconds: float, decode_seconds: Sequence[float], tokens: Sequence[int]
) -> dict[str, Any]:
    """One measured generation as the receipt records it: its times and the digest of its tokens."""
    return {
        "prefill_seconds": prefill_seconds,
        "ttft_seconds": ttft_seconds,
        "decode_seconds": list(decode_seconds),
        "tokens_generated": len(tokens),
        "output_sha256": token_digest(tokens),
    }


def generation_row(
    model: Model, prompt: list[int], tokens: int, params: SamplingParams
) -> tuple[dict[str, Any], list[int]]:
    """One engine generation: its repetition row and the generated ids (the trace is left as it counts)."""
    first_token_at: list[float] = []

    def on_token(_token: int) -> None:
        if not first_token_at:
            first_token_at.append(time.perf_counter())

    start = time.perf_counter()
    result = generate(model, prompt, tokens, params, on_token)
    ttft = (first_token_at[0] - start) if first_token_at else result.prefill_seconds
    return repetition_row(result.prefill_seconds, ttft, result.decode_seconds, result.tokens), result.tokens


def run_benchmark(
    model: Model,
    prompt: list[int],
    tokens: int,
    repetitions: int,
    warmup: int,
    params: SamplingParams,
    on_repetition: RepetitionFn | None = None,
) -> tuple[dict[str, Any], list[int]]:
    """The receipt's `phases.benchmark` section and the token ids of the first measured repetition."""
    if repetitions < 1:
        raise HarnessError(f"--repetitions must be >= 1 (got {repetitions})")
    if warmup < 0:
        raise HarnessError(f"--warmup must be >= 0 (got {warmup})")
    total = warmup + repetitions
    for i in range(warmup):
        generation_row(model, prompt, tokens, params)
        if on_repetition is not None:
            on_repetition(i + 1, total)
    model.trace.reset()
    rows: list[dict[str, Any]] = []
    first_tokens: list[int] = []
    for i in range(repetitions):
        row, ids = generation_row(model, prompt, tokens, params)
        rows.append(row)
        if i == 0:
            first_tokens = ids
        if on_repetition is not None:
            on_repetition(warmup + i + 1, total)
    return summarize(rows, warmup), first_tokens


def summarize(rows: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """The `phases.benchmark` section of measured repetition rows: the raw rows and their summaries."""
    steps = [s for r in rows for s in r["decode_seconds"]]
    return {
        "warmup_repetitions": warmup,
        "repetitions": rows,
        "summary": {
            "prefill_seconds": percentiles([r["prefill_seconds"] for r in rows]),
            "ttft_seconds": percentiles([r["ttft_seconds"] for r in rows]),
            "decode_latency_seconds": percentiles(steps) if steps else None,
            "tokens_per_second": decode_tokens_per_second(rows),
        },
    }
