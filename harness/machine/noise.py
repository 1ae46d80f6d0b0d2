"""Was the machine quiet while a run measured? The figures and the verdict of the receipt's `noise` section.

System figures cover the measured phases (probe, timing, benchmark; the bandwidth probes run before and after,
outside the window) and come from /proc: the 1-minute load average at both ends (/proc/loadavg), and over the
CPUs this process may use, the share of their time the hypervisor stole and the share other processes used:
the CPUs' busy time (/proc/stat) minus this process's own (/proc/self/stat). Sample figures come from the
benchmark's raw samples: each per-repetition metric's coefficient of variation, and outliers by hyperfine's
rule (modified z-score, from the median and the median absolute deviation, above 14), the first measured
repetition named apart as hyperfine does. Every limit crossed is one reason in words; any reason makes the run
noisy. Warnings are worth reading but do not make a run noisy. The reasons read from the samples' own spread
are also listed apart (`sample_reasons`): they break a comparison of one run per side, whose interval cannot
hold the spread between runs, but not one of several runs per side, whose interval holds it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

OTHER_CPU_LIMIT = 0.10  # other processes' share of the usable CPUs' time
STEAL_LIMIT = 0.05  # the hypervisor's share
CV_LIMIT = 0.10  # coefficient of variation of a per-repetition metric
OUTLIER_Z = 14.0  # hyperfine's threshold on the modified z-score
TOKEN_OUTLIER_LIMIT = 0.01  # share of decode steps that are outliers
_PROC = Path("/proc")


@dataclass(frozen=True)
class Snapshot:
    """The counters at one instant; None for what this system does not expose."""

    at: float  # time.monotonic()
    load1: float | None
    busy: int | None  # ticks the usable CPUs spent on any work (steal included)
    total: int | None  # every tick of the usable CPUs
    steal: int | None
    own: int | None  # ticks of this process, every thread


def _usable_cpus() -> set[int] | None:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


def _cpu_ticks(proc: Path) -> tuple[int, int, int] | None:
    """(busy, total, steal) ticks summed over the usable CPUs' `cpuN` lines of /proc/stat."""
    usable = _usable_cpus()
    busy = total = steal = 0
    seen = False
    try:
        lines = (proc / "stat").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if usable is not None and int(name[3:]) not in usable:
            continue
        # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user and nice]
        ticks = [int(f) for f in fields[:8]]
        ticks += [0] * (8 - len(ticks))
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
        steal += ticks[7]
        seen = True
    return (busy, total, steal) if seen else None


def _own_ticks(proc: Path) -> int | None:
    """utime + stime of this process (all its threads), from /proc/self/stat."""
    try:
        text = (proc / "self" / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return int(fields[11]) + int(fields[12])


def _load1(proc: Path) -> float | None:
    try:
        return float((proc / "loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def snapshot(proc: Path = _PROC) -> Snapshot:
    """The counters now."""
    ticks = _cpu_ticks(proc)
    busy, total, steal = ticks if ticks is not None else (None, None, None)
    return Snapshot(time.monotonic(), _load1(proc), busy, total, steal, _own_ticks(proc))


@dataclass(frozen=True)
class SystemUsage:
    """What the machine did between two snapshots; shares are fractions of the usable CPUs' time."""

    seconds: float
    cpus: int
    load1_start: float | None
    load1_end: float | None
    own_cpu_share: float | None
    other_cpu_share: float | None
    steal_share: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def reasons(self) -> list[str]:
        out = []
        if self.other_cpu_share is not None and self.other_cpu_share > OTHER_CPU_LIMIT:
            out.append(
                f"other processes used {self.other_cpu_share:.0%} of the {self.cpus} CPUs' time while "
                f"the run measured (limit {OTHER_CPU_LIMIT:.0%})"
            )
        if self.steal_share is not None and self.steal_share > STEAL_LIMIT:
            out.append(
                f"the hypervisor stole {self.steal_share:.0%} of the CPUs' time (limit {STEAL_LIMIT:.0%})"
            )
        if self.load1_start is not None and self.load1_start > self.cpus:
            out.append(
                f"the load average was {self.load1_start:.2f} on {self.cpus} CPUs when the measured phases "
                "started (the machine was already oversubscribed)"
            )
        return out


def usage_between(start: Snapshot, end: Snapshot) -> SystemUsage:
    """The system figures of the window [start, end]; a share is None where /proc did not give it."""
    cpus = len(_usable_cpus() or ()) or os.cpu_count() or 1
    own = other = steal = None
    if None not in (start.total, end.total, start.busy, end.busy, start.steal, end.steal):
        total = max(end.total - start.total, 1)  # type: ignore[operator]
        busy = end.busy - start.busy  # type: ignore[operator]
        steal = (end.steal - start.steal) / total  # type: ignore[operator]
        if start.own is not None and end.own is not None:
            mine = end.own - start.own
            own = min(mine / total, 1.0)
            other = max(busy - (end.steal - start.steal) - mine, 0) / total  # type: ignore[operator]
    return SystemUsage(end.at - start.at, cpus, start.load1, end.load1, own, other, steal)


def modified_z(values: Sequence[float]) -> np.ndarray:
    """(x - median) / (1.4826 * MAD): a z-score that a few outliers cannot hide behind. When more than half
    the values are equal (MAD 0) the mean absolute deviation stands in, scaled by 1.2533 (Iglewicz and
    Hoaglin); all values equal give 0."""
    x = np.asarray(values, np.float64)
    dev = x - np.median(x)
    scale = 1.4826 * np.median(np.abs(dev))
    if scale == 0:
        scale = 1.2533 * np.mean(np.abs(dev))
    return dev / scale if scale > 0 else np.zeros_like(x)


@dataclass(frozen=True)
class SampleFigures:
    """One metric's spread: n, median, coefficient of variation, outliers by the modified z-score."""

    n: int
    median: float
    cv: float | None
    outliers: int
    first_outlier: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def sample_figures(values: Sequence[float]) -> SampleFigures:
    """Spread figures of one metric's samples (a time: higher is slower); outliers need 3 samples."""
    x = np.asarray(values, np.float64)
    cv = float(np.std(x, ddof=1) / np.mean(x)) if x.size > 1 and np.mean(x) > 0 else None
    z = modified_z(x) if x.size >= 3 else np.zeros(x.size)
    first = bool(x.size and z[0] > OUTLIER_Z)
    return SampleFigures(int(x.size), float(np.median(x)), cv, int(np.sum(np.abs(z) > OUTLIER_Z)), first)


_PER_REPETITION = {
    "decode_seconds_per_token": "decode time per token",
    "prefill_seconds": "prefill time",
    "ttft_seconds": "time to first token",
}


def benchmark_samples(benchmark: Mapping[str, Any]) -> dict[str, list[float]]:
    """The samples judged here from a `phases.benchmark` section: per repetition, and every decode step."""
    reps = benchmark["repetitions"]
    return {
        "decode_seconds_per_token": [
            sum(r["decode_seconds"]) / len(r["decode_seconds"]) for r in reps if r["decode_seconds"]
        ],
        "prefill_seconds": [r["prefill_seconds"] for r in reps],
        "ttft_seconds": [r["ttft_seconds"] for r in reps],
        "decode_step_seconds": [s for r in reps for s in r["decode_seconds"]],
    }


def _sample_verdicts(figures: Mapping[str, SampleFigures]) -> tuple[list[str], list[str]]:
    reasons, warnings = [], []
    for key, label in _PER_REPETITION.items():
        f = figures.get(key)
        if f is None or f.n == 0:
            continue
        if f.cv is not None and f.cv > CV_LIMIT:
            reasons.append(
                f"{label} varies by {f.cv:.0%} (coefficient of variation) across {f.n} repetitions "
                f"(limit {CV_LIMIT:.0%})"
            )
        if f.first_outlier:
            reasons.append(
                f"the first measured repetition's {label} was much slower than the rest "
                "(more --warmup may help)"
            )
        elif f.outliers:
            reasons.append(f"statistical outliers among the repetitions' {label} ({f.outliers} of {f.n})")
    steps = figures.get("decode_step_seconds")
    if steps is not None and steps.n and steps.outliers:
        share = steps.outliers / steps.n
        text = f"{steps.outliers} of {steps.n} decode steps are statistical outliers ({share:.1%})"
        if share > TOKEN_OUTLIER_LIMIT:
            reasons.append(f"{text}; limit {TOKEN_OUTLIER_LIMIT:.0%}")
        else:
            warnings.append(text)
    return reasons, warnings


def assess(
    usage: SystemUsage | None, benchmark: Mapping[str, Any], more_reasons: Sequence[str] = ()
) -> dict[str, Any]:
    """The receipt's `noise` section: noisy, the reasons, warnings, and the figures they were read from."""
    figures = {k: sample_figures(v) for k, v in benchmark_samples(benchmark).items() if v}
    reasons = list(usage.reasons()) if usage is not None else []
    sample_reasons, warnings = _sample_verdicts(figures)
    reasons += sample_reasons + list(more_reasons)
    if usage is None:
        warnings.append("system load was not measured (no /proc)")
    return {
        "noisy": bool(reasons),
        "reasons": reasons,
        "sample_reasons": sample_reasons,
        "warnings": warnings,
        "system": usage.to_dict() if usage is not None else None,
        "samples": {k: f.to_dict() for k, f in figures.items()},
        "limits": {
            "other_cpu_share": OTHER_CPU_LIMIT,
            "steal_share": STEAL_LIMIT,
            "cv": CV_LIMIT,
            "outlier_z": OUTLIER_Z,
            "decode_step_outlier_share": TOKEN_OUTLIER_LIMIT,
        },
    }
