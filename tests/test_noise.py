"""Noise detection: the system figures from /proc, the samples' spread and outliers, the receipt's `noise`
section, the report's warning and compare's refusal to decide on a noisy run."""

import io
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from rich.console import Console

from harness.comparison.compare import compare
from harness.comparison.stats import Verdict
from harness.machine import noise
from harness.machine.noise import SystemUsage, assess, modified_z, sample_figures, snapshot, usage_between
from harness.receipts.schema import load_schema
from harness.receipts.verify import verify
from harness.reporting.receipt import render
from tests.archive_factory import bench_receipt, noisy, speeds

QUIET = SystemUsage(10.0, 2, 0.4, 1.9, 0.95, 0.01, 0.0)


def _fake_proc(root: Path, cpu_lines: list[str], own: tuple[int, int], load: float) -> Path:
    (root / "self").mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("cpu  0 0 0 0 0 0 0 0 0 0\n" + "".join(f"{line}\n" for line in cpu_lines))
    # the command name holds a space and a parenthesis, as a real one can
    (root / "self" / "stat").write_text(f"42 (py (x) 1) R 1 1 1 0 -1 0 0 0 0 0 {own[0]} {own[1]} 0 0 20 0\n")
    (root / "loadavg").write_text(f"{load:.2f} 0.50 0.40 2/100 4242\n")
    return root


def test_shares_come_from_the_usable_cpus_ticks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(noise.os, "sched_getaffinity", lambda _pid: {0, 1}, raising=False)
    # cpuN: user nice system idle iowait irq softirq steal; cpu2 is not usable and must not count
    before = ("100 0 0 900 0 0 0 0", "100 0 0 900 0 0 0 0", "0 0 0 0 0 0 0 0")
    after = ("180 0 10 900 0 0 0 10", "150 0 0 950 0 0 0 0", "999 0 0 0 0 0 0 0")
    snaps = []
    for name, ticks, own, load in (("a", before, (50, 10), 0.5), ("b", after, (150, 20), 3.5)):
        lines = [f"cpu{i} {t}" for i, t in enumerate(ticks)]
        snaps.append(snapshot(_fake_proc(tmp_path / name, lines, own, load)))
    start, end = snaps
    usage = usage_between(start, end)
    # 200 ticks passed: 150 busy, of which 10 stolen and 110 ours, so 30 were other processes'
    assert usage.cpus == 2
    assert usage.own_cpu_share == pytest.approx(110 / 200)
    assert usage.other_cpu_share == pytest.approx(30 / 200)
    assert usage.steal_share == pytest.approx(10 / 200)
    assert (usage.load1_start, usage.load1_end) == (0.5, 3.5)
    reasons = usage.reasons()
    assert len(reasons) == 1  # 5 % stolen is the limit, not above it; the load was low at the start
    assert reasons[0].startswith("other processes used 15% of the 2 CPUs' time while the run measured")


def test_missing_proc_gives_unknown_figures(tmp_path: Path) -> None:
    usage = usage_between(snapshot(tmp_path), snapshot(tmp_path))
    assert usage.other_cpu_share is None and usage.load1_start is None and usage.reasons() == []


def test_real_proc_counts_this_process() -> None:
    start = snapshot()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        pass
    usage = usage_between(start, snapshot())
    assert usage.seconds >= 0.3 and usage.cpus == len(os.sched_getaffinity(0))
    assert usage.own_cpu_share is not None and usage.own_cpu_share > 0
    total = usage.own_cpu_share + (usage.other_cpu_share or 0) + (usage.steal_share or 0)
    assert total <= 1.0 + 1e-9


def test_modified_z_scores() -> None:
    z = modified_z([10.0, 10.1, 9.9, 10.0, 30.0])
    assert abs(z[-1]) > noise.OUTLIER_Z and np.all(np.abs(z[:-1]) < 2)
    assert list(modified_z([1.0, 1.0, 1.0])) == [0.0, 0.0, 0.0]
    assert modified_z([1.0, 1.0, 1.0, 2.0])[-1] == pytest.approx(1 / (1.2533 * 0.25))  # MAD 0: mean deviation


def test_sample_figures_name_the_first_outlier_apart() -> None:
    first = sample_figures([0.5, 0.1, 0.101, 0.099, 0.1])
    assert first.first_outlier and first.outliers == 1 and first.cv is not None and first.cv > 0.5
    later = sample_figures([0.1, 0.101, 0.5, 0.099, 0.1])
    assert not later.first_outlier and later.outliers == 1
    two = sample_figures([0.1, 0.3])
    assert two.outliers == 0 and two.n == 2  # outliers need three samples


def _section(bench: dict, usage: SystemUsage | None = QUIET, more: tuple[str, ...] = ()) -> dict:
    out = assess(usage, bench, more)
    schema = load_schema()
    sub = {"$defs": schema["$defs"], **schema["properties"]["noise"]}
    assert list(Draft202012Validator(sub).iter_errors(out)) == []
    return out


def _bench(tok_s: list[float]) -> dict:
    return bench_receipt(speeds(tok_s))["phases"]["benchmark"]


def test_a_quiet_steady_run_is_not_noisy() -> None:
    out = _section(_bench(noisy(100, 10, 0.01, seed=1)))
    assert out["noisy"] is False and out["reasons"] == []
    assert out["system"]["other_cpu_share"] == 0.01
    assert out["samples"]["decode_seconds_per_token"]["n"] == 10


def test_each_reason_is_said_in_words() -> None:
    busy = SystemUsage(10.0, 2, 3.1, 4.0, 0.5, 0.4, 0.08)
    out = _section(_bench([60, 100, 101, 99, 100, 100]), busy, ("read bandwidth before and after disagree",))
    text = "\n".join(out["reasons"])
    assert out["noisy"] is True
    assert "other processes used 40% of the 2 CPUs' time" in text
    assert "the hypervisor stole 8%" in text
    assert "load average was 3.10 on 2 CPUs" in text
    assert "first measured repetition's decode time per token was much slower" in text
    assert "decode time per token varies by" in text
    assert "read bandwidth before and after disagree" in text
    spread = out["sample_reasons"]  # the reasons read from the samples alone, listed apart
    assert spread and all(r in out["reasons"] for r in spread)
    assert not any("other processes" in r or "bandwidth" in r or "load average" in r for r in spread)


def test_without_proc_the_section_says_so() -> None:
    out = _section(_bench([100.0] * 4), usage=None)
    assert out["system"] is None and out["noisy"] is False
    assert "system load was not measured (no /proc)" in out["warnings"]


def _steps(reps: int, steps: int, slow: int) -> dict:
    """A benchmark section of `reps` repetitions of 10 ms steps; the first `slow` steps of each take 50 ms."""
    rows = [
        {
            "prefill_seconds": 0.05,
            "ttft_seconds": 0.06,
            "decode_seconds": [0.05] * slow + [0.01] * (steps - slow),
        }
        for _ in range(reps)
    ]
    return {"repetitions": rows}


def test_a_few_slow_steps_are_a_warning_many_make_it_noisy() -> None:
    few = _section(_steps(4, 100, 0))
    assert few["noisy"] is False and few["warnings"] == []
    one = _steps(4, 100, 0)
    one["repetitions"][2]["decode_seconds"][7] = 0.05
    out = _section(one)
    assert out["noisy"] is False
    assert out["warnings"] == ["1 of 400 decode steps are statistical outliers (0.2%)"]
    many = _section(_steps(4, 100, 2))
    assert any(
        "8 of 400 decode steps are statistical outliers (2.0%); limit 1%" in r for r in many["reasons"]
    )


def _with_noise(reasons: list[str]):
    def edit(r: dict) -> None:
        r["noise"] = {"noisy": bool(reasons), "reasons": reasons}

    return edit


def test_compare_calls_a_noisy_side_inconclusive_and_says_why() -> None:
    base = bench_receipt(speeds(noisy(100, 8, 0.01, 1)), edit=_with_noise([]))
    new = bench_receipt(
        speeds(noisy(70, 8, 0.01, 2)), edit=_with_noise(["other processes used 40% of the CPUs"])
    )
    assert verify(base).ok and verify(new).ok
    comp = compare(base, new)
    timings = [r for r in comp.rows if r.metric.kind != "single"]
    assert all(r.judgement.verdict == Verdict.INCONCLUSIVE for r in timings)
    assert timings[0].judgement.note == "noisy run: NEW"
    assert comp.exit_code == 3
    assert any("NEW was a noisy run" in n and "other processes used 40%" in n for n in comp.notes)
    judged = compare(base, new, ignore=("noise",))
    assert judged.rows[0].judgement.verdict == Verdict.REGRESSION and judged.exit_code == 1


def test_a_side_of_several_runs_counts_only_noise_outside_its_samples_spread() -> None:
    spread = "decode time per token varies by 14% (coefficient of variation) across 5 repetitions (limit 10%)"
    busy = "other processes used 40% of the CPUs"

    def section(reasons: list[str], sample_reasons: list[str] | None) -> Callable[[dict], None]:
        def edit(r: dict) -> None:
            r["noise"] = {"noisy": bool(reasons), "reasons": reasons}
            if sample_reasons is not None:
                r["noise"]["sample_reasons"] = sample_reasons

        return edit

    def run(seed: int, center: float, reasons: list[str], sample_reasons: list[str] | None) -> dict:
        receipt = bench_receipt(speeds(noisy(center, 8, 0.01, seed)), edit=section(reasons, sample_reasons))
        assert verify(receipt).ok
        return receipt

    base = [run(1, 100, [spread], [spread])] + [run(s, 100, [], []) for s in (2, 3, 4)]
    one = compare(base[0], run(5, 100, [], []))
    assert one.exit_code == 3 and "noisy run: BASE" in (one.rows[0].judgement.note or "")
    new = [run(s, 100, [], []) for s in (6, 7, 8)]
    several = compare(base, [*new, run(9, 100, [spread], [spread])])
    assert not any("noisy" in n for n in several.notes)
    assert several.rows[0].judgement.verdict == Verdict.NO_CHANGE and several.exit_code == 0
    outside = compare(base, [run(10, 100, [spread, busy], [spread]), *new])
    assert outside.exit_code == 3
    assert any("NEW was a noisy run" in n and "run 1: other processes used 40%" in n for n in outside.notes)
    assert not any(spread in n for n in outside.notes)
    older = compare(base, [run(11, 100, [spread], None), *new])  # no sample_reasons field: all reasons count
    assert older.exit_code == 3 and any(spread in n for n in older.notes)


def test_report_prints_the_noise_warning() -> None:
    receipt = bench_receipt(
        speeds([100.0] * 3), edit=_with_noise(["the hypervisor stole 9% of the CPUs' time"])
    )
    out = io.StringIO()
    render(receipt, Console(file=out, width=200), verify(receipt))
    text = out.getvalue()
    assert "WARNING: noisy run" in text and "the hypervisor stole 9%" in text
    quiet = bench_receipt(speeds([100.0] * 3), edit=_with_noise([]))
    out = io.StringIO()
    render(quiet, Console(file=out, width=200))
    assert "noisy" not in out.getvalue()
