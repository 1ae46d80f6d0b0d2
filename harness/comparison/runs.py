"""The summary table of a benchmark run or sweep: one row per receipt, its configuration and its speeds.

Speeds come from the raw samples (harness.comparison.metrics): the median over the measured repetitions and
their sample standard deviation (llama-bench's `± sd`), so the table says what the receipts hold.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.comparison.metrics import BY_KEY, samples
from harness.receipts.verify import VerificationResult

COLUMNS = [
    "model",
    "format",
    "kernel",
    "kernels used",
    "threads",
    "prompt tokens",
    "tokens",
    "repetitions",
    "prefill tok/s",
    "prefill sd",
    "decode tok/s",
    "decode sd",
    "ttft s",
    "verification",
    "receipt",
]


def _median_sd(receipt: Mapping[str, Any], key: str) -> tuple[float | None, float | None]:
    x = samples(receipt, BY_KEY[key])
    if x.size == 0:
        return None, None
    return float(np.median(x)), float(np.std(x, ddof=1)) if x.size > 1 else None


def verdict(result: VerificationResult) -> str:
    """`verified` (noting a speed the receipt itself marks unreliable), or `FAILED: ` and the failed gates."""
    if result.ok:
        return "verified (speed unreliable)" if result.speed_unreliable else "verified"
    return "FAILED: " + ", ".join(g.name for g in result.failures)


def run_row(receipt: Mapping[str, Any], path: Path, verification: str) -> dict[str, Any]:
    """A benchmark receipt as one row of the summary table."""
    model = receipt["model"]
    choice = receipt["kernel_choice"]
    prefill, prefill_sd = _median_sd(receipt, "prefill_tok_s")
    decode, decode_sd = _median_sd(receipt, "decode_tok_s")
    ttft, _ = _median_sd(receipt, "ttft_s")
    return {
        "model": model["preset"] or Path(str(model["path"])).stem,
        "format": model["format"],
        "kernel": choice["requested"],
        "kernels used": "+".join(sorted({row["kernel"] for row in choice["per_shape"]})),
        "threads": receipt["threads"],
        "prompt tokens": receipt["prompt"]["token_count"],
        "tokens": receipt["tokens_requested"],
        "repetitions": len(receipt["phases"]["benchmark"]["repetitions"]),
        "prefill tok/s": prefill,
        "prefill sd": prefill_sd,
        "decode tok/s": decode,
        "decode sd": decode_sd,
        "ttft s": ttft,
        "verification": verification,
        "receipt": str(path),
    }


def runs_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The rows of run_row, in run order."""
    return pd.DataFrame(list(rows), columns=COLUMNS)


def compact_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The summary for a terminal: the configuration, `median ± sd` of each speed and the verdict."""

    def short(x: float) -> str:
        return f"{x:.0f}" if abs(x) >= 100 else f"{x:.3g}"

    def with_sd(median: object, sd: object) -> str:
        if not isinstance(median, float) or pd.isna(median):
            return "-"
        return short(median) + ("" if not isinstance(sd, float) or pd.isna(sd) else f" ± {short(sd)}")

    out = frame[["model", "format", "kernel", "threads", "prompt tokens", "tokens"]].copy()
    out["prefill tok/s"] = [
        with_sd(m, s) for m, s in zip(frame["prefill tok/s"], frame["prefill sd"], strict=True)
    ]
    out["decode tok/s"] = [
        with_sd(m, s) for m, s in zip(frame["decode tok/s"], frame["decode sd"], strict=True)
    ]
    out["verification"] = frame["verification"]
    return out
