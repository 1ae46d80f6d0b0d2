"""A metric over the archive, receipt by receipt, with its noise band; as a table, a terminal chart, or a
PNG/SVG through matplotlib (the optional `plot` extra).

The noise band of a receipt: for metrics with one sample per repetition, the p10-p90 of those samples; for the
per-token metrics (decode speed, token-latency percentiles), the p10-p90 of the statistic's seeded block
bootstrap distribution (harness.comparison.stats, the design `compare` judges them by); peak RSS has one value
and no band.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.comparison.archive import Entry
from harness.comparison.metrics import PER_REPETITION, PER_TOKEN, Metric, groups, samples
from harness.comparison.stats import N_RESAMPLES, SEED, block_bootstrap
from harness.errors import HarnessError

BAND = (10.0, 90.0)
_CHART_SUFFIXES = (".png", ".svg")
COLUMNS = [
    "date",
    "commit",
    "model",
    "threads",
    "cpu",
    "machine",
    "n",
    "value",
    "band low",
    "band high",
    "file",
]


def band(
    x: np.ndarray, m: Metric, parts: list[np.ndarray] | None = None, seed: int = SEED
) -> tuple[float, float]:
    """The receipt's noise band for metric m (see the module docstring); `parts` are a per-token metric's
    samples per repetition (metrics.groups)."""
    value = float(m.statistic(x))
    if m.kind == PER_REPETITION:
        low, high = np.percentile(x, BAND)
        return float(low), float(high)
    if m.kind == PER_TOKEN and parts and x.size >= 2 and np.unique(x).size > 1:
        dist = block_bootstrap(parts, m.statistic, N_RESAMPLES, np.random.default_rng(seed))
        low, high = np.percentile(dist, BAND)
        return float(low), float(high)
    return value, value


def samples_and_band(receipt: Mapping[str, Any], m: Metric) -> tuple[np.ndarray, float, float] | None:
    """A receipt's samples of metric m and their noise band; None when it has none (or they are malformed)."""
    try:
        x = samples(receipt, m)
    except HarnessError:
        return None
    if x.size == 0:
        return None
    low, high = band(x, m, groups(receipt, m) if m.kind == PER_TOKEN else None)
    return x, low, high


def frame(
    entries: list[Entry],
    m: Metric,
    *,
    model: str | None = None,
    threads: int | None = None,
    machine: str | None = None,
) -> pd.DataFrame:
    """One row per archived receipt (oldest first) with the metric, its band and what it ran on; `machine`
    keeps the receipts of one host fingerprint (an id or a prefix of one, see harness.machine.fingerprint)."""
    rows = []
    for e in entries:
        r = e.receipt
        if r is None or e.moment is None:
            continue
        info = r.get("model") or {}
        name = info.get("preset") or Path(str(info.get("path", "?"))).stem
        if (model is not None and name != model) or (threads is not None and r.get("threads") != threads):
            continue
        if machine is not None and not (e.machine or "").startswith(machine.lower()):
            continue
        banded = samples_and_band(r, m)
        if banded is None:
            continue
        x, low, high = banded
        rows.append(
            {
                "date": e.moment.strftime("%Y-%m-%d %H:%M"),
                "commit": (e.commit or "-")[:10],
                "model": name,
                "threads": r.get("threads"),
                "cpu": (r.get("host") or {}).get("cpu_model"),
                "machine": e.machine,
                "n": int(x.size),
                "value": float(m.statistic(x)),
                "band low": low,
                "band high": high,
                "file": e.name,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def terminal_chart(table: pd.DataFrame, m: Metric, width: int = 36) -> list[str]:
    """One line per receipt: the band as `├───┤`, the value as `●`, on a shared axis."""
    if table.empty:
        return []
    lo = float(table[["value", "band low"]].min().min())
    hi = float(table[["value", "band high"]].max().max())
    span = hi - lo or abs(hi) or 1.0

    def col(v: float) -> int:
        return min(width - 1, max(0, round((v - lo) / span * (width - 1))))

    better = "higher" if m.higher_is_better else "lower"
    lines = [f"{m.label} ({m.unit}; {better} is better; ● value, ├─┤ noise band), axis {lo:.4g} .. {hi:.4g}"]
    for row in table.to_dict("records"):
        canvas = [" "] * width
        a, b = col(row["band low"]), col(row["band high"])
        for i in range(a, b + 1):
            canvas[i] = "─"
        canvas[a], canvas[b] = "├", "┤"
        canvas[col(row["value"])] = "●"
        lines.append(f"{row['date']} {row['commit'][:8]:<8} │{''.join(canvas)}│ {row['value']:.4g}")
    return lines


def write_chart(table: pd.DataFrame, m: Metric, path: Path) -> Path:
    """Write a PNG or SVG chart (values and noise band per model/threads/machine series) with matplotlib."""
    if path.suffix.lower() not in _CHART_SUFFIXES:
        raise HarnessError(f"--chart {path}: give a .png or .svg file name")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise HarnessError(
            "--chart needs matplotlib: pip install 'bitnet-harness[plot]' (the terminal chart needs nothing)"
        ) from None
    if table.empty:
        raise HarnessError("no archived receipt has this metric; nothing to chart")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(table) + 3), 4.0))
    x = np.arange(len(table))
    for key, group in table.groupby(["model", "threads", "machine"], dropna=False, sort=False):
        idx = x[group.index.to_numpy()]
        label = f"{key[0]}, {key[1]} threads, machine {key[2]}"
        values = group["value"].to_numpy()
        spread = [values - group["band low"].to_numpy(), group["band high"].to_numpy() - values]
        ax.errorbar(idx, values, yerr=spread, marker="o", capsize=4, label=label)
    ax.set_xticks(x, [f"{d}\n{c}" for d, c in zip(table["date"], table["commit"], strict=True)], fontsize=7)
    ax.set_ylabel(f"{m.label} ({m.unit})")
    ax.set_title(f"{m.label} over the archive (band: noise p10-p90)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
