"""The summary math of a receipt: percentiles, decode throughput, the ratios against a peer.

The verifier recomputes every summary with these functions, so a writer that uses them passes by
construction and a hand-edited number does not.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from harness.errors import HarnessError

PERCENTILES = (50, 90, 99)


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99 with linear interpolation (numpy.percentile's default); samples must not be empty."""
    if len(samples) == 0:
        raise HarnessError("percentiles of an empty sample list")
    values = np.percentile(np.asarray(samples, dtype=np.float64), PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}


def decode_tokens_per_second(repetitions: Sequence[Mapping[str, Any]]) -> float:
    """Decode steps of all repetitions over the sum of their latencies; 0.0 when there were no steps."""
    steps = sum(len(rep["decode_seconds"]) for rep in repetitions)
    seconds = float(sum(sum(rep["decode_seconds"]) for rep in repetitions))
    if steps == 0:
        return 0.0
    if seconds <= 0.0:
        raise HarnessError("decode latencies sum to zero; cannot compute tokens per second")
    return steps / seconds


def peer_ratios(
    engine_reps: Sequence[Mapping[str, Any]], peer_reps: Sequence[Mapping[str, Any]]
) -> dict[str, float]:
    """From the raw rows: engine decode tok/s over the peer's; peer median prefill time over the engine's."""
    peer_tps = decode_tokens_per_second(peer_reps)
    engine_prefill = percentiles([r["prefill_seconds"] for r in engine_reps])["p50"]
    if peer_tps <= 0 or engine_prefill <= 0:
        raise HarnessError("the peer decoded no tokens or a prefill took no time; no ratio can be formed")
    return {
        "decode_ratio": decode_tokens_per_second(engine_reps) / peer_tps,
        "prefill_ratio": percentiles([r["prefill_seconds"] for r in peer_reps])["p50"] / engine_prefill,
    }
