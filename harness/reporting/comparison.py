"""A comparison as people read it: values in readable units, the ratio with its interval, p-value, verdict."""

import pandas as pd

from harness.comparison.compare import Comparison
from harness.comparison.stats import POWER
from harness.comparison.tables import cell


def value_text(value: float | None, unit: str) -> str:
    """A metric's value in readable units (ms for seconds, MiB for bytes)."""
    if value is None or value != value:
        return "-"
    if unit == "s":
        return f"{value * 1e3:.4g} ms"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    return f"{value:.4g}"


def _fmt_mde(mde: float | None) -> str:
    """The minimum detectable effect: '-' without a test, 'none' when no change could be detected."""
    if mde is None or mde != mde:
        return "-"
    return "none" if mde == float("inf") else f"{mde * 100:.1f} %"


def comparison_frame(comp: Comparison) -> pd.DataFrame:
    """The human table: values in readable units, ratio with its 95 % interval, p-value, verdict."""
    rows = []
    for row in comp.rows:
        j, m = row.judgement, row.metric
        ci = f"[{j.ci_low:.3f}, {j.ci_high:.3f}]" if j.ci_low is not None and j.ci_high is not None else "-"
        rows.append(
            {
                "metric": f"{m.label} {'↑' if m.higher_is_better else '↓'}",
                "n": f"{j.n_base}/{j.n_new}",
                "BASE": value_text(j.base, m.unit),
                "NEW": value_text(j.new, m.unit),
                "NEW/BASE": cell(j.ratio if j.ratio == j.ratio else None),
                "95% CI": ci,
                "p": "-" if j.p_value is None else f"{j.p_value:.3g}",
                "MDE": _fmt_mde(j.mde),
                "verdict": j.verdict.value,
            }
        )
    geo = "-" if comp.geomean is None else f"{comp.geomean:.4g}"
    rows.append({"metric": "geomean speed-up ↑", "NEW/BASE": geo, "verdict": ""})
    return pd.DataFrame(rows).fillna("")


def header(comp: Comparison, sep: str = "\n") -> str:
    """Which receipt is BASE and which NEW, and the rule the verdicts follow."""
    forced = " (forced: not comparable)" if comp.forced and comp.reasons else ""
    return sep.join(
        [
            f"BASE {comp.base_label}",
            f"NEW  {comp.new_label}",
            f"medians (decode: steps/s; latency: percentiles), ↑/↓ better; threshold "
            f"{comp.threshold * 100:g} %, alpha {comp.alpha:g}{forced}",
            detectable_line(comp),
        ]
    )


def detectable_line(comp: Comparison) -> str:
    """The pair's minimum detectable effect on decode speed and on its floor, in words, and what the
    intervals hold."""
    found = {key: comp.detectable(key) for key in ("decode_tok_s", "decode_floor_s")}
    shown = {k: v for k, v in found.items() if v is not None and v == v and v != float("inf")}
    if "decode_tok_s" not in shown:
        return "minimum detectable effect on decode tok/s: none (too few samples to detect any change)"
    floor = f", on the decode step floor: {shown['decode_floor_s'] * 100:.1f} %" if len(shown) == 2 else ""
    runs = (
        "the intervals hold the spread within each run, not between runs: give each side several runs "
        "(A1,A2,A3,A4) on a host whose runs differ"
        if comp.runs == (1, 1)
        else f"{comp.runs[0]} and {comp.runs[1]} runs: the intervals hold the spread between runs"
    )
    return (
        f"minimum detectable effect on decode tok/s: {shown['decode_tok_s'] * 100:.1f} %{floor} (a change "
        f"this large is significant {POWER:.0%} of the time at alpha {comp.alpha:g}; a verdict also needs "
        f"the threshold); {runs}"
    )
