"""A receipt's kind, read from the phases it holds: `benchmark` (phase 3, with phases 1 and 2 when they ran
first), or the phase a `probe` or `timing` run recorded on its own. Derived, never stored: it cannot lie."""

from collections.abc import Mapping
from typing import Any

BENCHMARK = "benchmark"
PHASES = ("probe", "timing", BENCHMARK)


def receipt_kind(receipt: Mapping[str, Any]) -> str:
    """`benchmark`, `probe`, `timing`, `probe+timing`, or `none` for a receipt without a phase."""
    phases = receipt.get("phases")
    present = [p for p in PHASES if isinstance(phases, Mapping) and p in phases]
    if BENCHMARK in present:
        return BENCHMARK
    return "+".join(present) or "none"
