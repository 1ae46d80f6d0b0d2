"""The metrics `compare` and `history` judge, and how each one's raw samples come out of a receipt.

Samples are taken from the raw data, never from the receipt's summaries:
- decode tok/s: every decode step's latency, kept per repetition and in order; the statistic is their count
  over their sum (the receipt's tokens_per_second). Steps within a run are correlated, so they are judged by
  a block bootstrap over repetitions and runs of consecutive steps (harness.comparison.stats).
- decode step floor: the same per-step latencies; the statistic is their 1st percentile. Noise on a shared
  host only ever adds time, in spells that slow every step for a while, so the fast floor moves least between
  runs of one build (the minimum less still, but a bootstrap cannot resample a minimum).
- prefill tok/s: prompt tokens / prefill seconds, one per repetition.
- time to first token: one per repetition.
- token latency p50 / p99: the same per-step latencies; the statistic is that percentile.
- peak RSS: one value per receipt (the process peak), judged by the threshold alone with one run per side.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.comparison.stats import Statistic, median, percentile_of, rate
from harness.errors import HarnessError

PER_REPETITION, PER_TOKEN, SINGLE = "per repetition", "per token", "single"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    kind: str
    statistic: Statistic = median
    statistic_name: str = "median"


METRICS: tuple[Metric, ...] = (
    Metric("decode_tok_s", "decode tok/s", "tok/s", True, PER_TOKEN, rate, "steps/s"),
    Metric("decode_floor_s", "decode step floor", "s", False, PER_TOKEN, percentile_of(1), "p1"),
    Metric("prefill_tok_s", "prefill tok/s", "tok/s", True, PER_REPETITION),
    Metric("ttft_s", "time to first token", "s", False, PER_REPETITION),
    Metric("latency_p50_s", "token latency p50", "s", False, PER_TOKEN, percentile_of(50), "p50"),
    Metric("latency_p99_s", "token latency p99", "s", False, PER_TOKEN, percentile_of(99), "p99"),
    Metric("peak_rss_bytes", "peak RSS", "bytes", False, SINGLE, statistic_name="value"),
)
BY_KEY = {m.key: m for m in METRICS}


def metric(key: str) -> Metric:
    if key not in BY_KEY:
        raise HarnessError(f"unknown metric {key!r}; choose one of {', '.join(BY_KEY)}")
    return BY_KEY[key]


def _repetitions(receipt: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    try:
        reps = receipt["phases"]["benchmark"]["repetitions"]
    except (KeyError, TypeError):
        raise HarnessError(
            "receipt has no phases.benchmark.repetitions; it is not a benchmark receipt"
        ) from None
    if not isinstance(reps, list) or not reps:
        raise HarnessError("receipt's phases.benchmark.repetitions is empty")
    return reps


def samples(receipt: Mapping[str, Any], m: Metric) -> np.ndarray:
    """The raw samples of metric `m` in a receipt (float64); empty for a run without decode steps."""
    if m.kind == PER_TOKEN:
        parts = groups(receipt, m)
        return np.concatenate(parts) if parts else np.empty(0)
    try:
        if m.key == "peak_rss_bytes":
            return np.array([float(receipt["peak_rss_bytes"])])
        reps = _repetitions(receipt)
        if m.key == "prefill_tok_s":
            prompt_tokens = int(receipt["prompt"]["token_count"])
            values = [prompt_tokens / r["prefill_seconds"] for r in reps]
        else:
            values = [r["ttft_seconds"] for r in reps]
        return np.asarray(values, np.float64)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise HarnessError(f"receipt's raw samples for {m.label} are missing or malformed") from None


def groups(receipt: Mapping[str, Any], m: Metric) -> list[np.ndarray]:
    """A per-token metric's samples: each repetition's decode-step latencies in order (repetitions without
    steps left out)."""
    if m.kind != PER_TOKEN:
        raise HarnessError(f"{m.label} has one sample per {m.kind.split()[-1]}, not per token")
    try:
        parts = [np.asarray(r["decode_seconds"], np.float64) for r in _repetitions(receipt)]
    except (KeyError, TypeError, ValueError):
        raise HarnessError(f"receipt's raw samples for {m.label} are missing or malformed") from None
    return [p for p in parts if p.size]


def value(receipt: Mapping[str, Any], m: Metric) -> float | None:
    """The metric's statistic for one receipt (None without samples)."""
    x = samples(receipt, m)
    return float(m.statistic(x)) if x.size else None
