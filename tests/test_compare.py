"""`compare`: comparability refusals, verdicts and exit codes, every output format, real tiny-preset receipts,
`benchmark --compare-to` and the A/B modes."""

import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest

from harness.comparison.compare import (
    EXIT_ERROR,
    EXIT_INCONCLUSIVE,
    EXIT_OK,
    EXIT_REGRESSION,
    comparability,
    compare,
)
from harness.comparison.stats import Verdict
from harness.receipts.files import load_receipt
from harness.receipts.summary import percentiles
from tests.archive_factory import bench_receipt, day, fresh_app, invoke, noisy, speeds, write
from tests.receipt_factory import make_phase_receipt

APP = fresh_app()
N = 8


def _pair(folder: Path, base_speed: float, new_speed: float, n: int = N, **edits) -> tuple[Path, Path]:
    base = bench_receipt(speeds(noisy(base_speed, n, 0.01, 1)), when=day(1))
    new = bench_receipt(speeds(noisy(new_speed, n, 0.01, 2)), when=day(2), **edits)
    return write(folder, base), write(folder, new)


def _verdicts(out: str) -> dict[str, str]:
    rows = json.loads(out)["rows"]
    return {r["metric"]: r["verdict"] for r in rows}


def test_clear_improvement_exits_0(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, 100, 130)
    res = invoke(APP, ["compare", b, n, "--format", "json"])
    assert res.code == EXIT_OK
    verdicts = _verdicts(res.stdout)
    assert verdicts["decode tok/s"] == "improvement"
    assert verdicts["token latency p50"] == "improvement"
    assert verdicts["prefill tok/s"] == "no change"
    assert json.loads(res.stdout)["verdict"] == "no regression"


def test_clear_regression_exits_1(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, 100, 70)
    res = invoke(APP, ["compare", b, n, "--format", "json"])
    assert res.code == EXIT_REGRESSION
    assert _verdicts(res.stdout)["decode tok/s"] == "regression"


def test_identical_samples_are_no_change(tmp_path: Path) -> None:
    reps = speeds(noisy(100, N, 0.02, 4), noisy(0.01, N, 0.02, 5), noisy(0.011, N, 0.02, 6))
    b = write(tmp_path, bench_receipt(reps, when=day(1)))
    n = write(tmp_path, bench_receipt(reps, when=day(2)))
    res = invoke(APP, ["compare", b, n, "--format", "json"])
    assert res.code == EXIT_OK
    assert set(_verdicts(res.stdout).values()) == {"no change", None}  # None: the geometric-mean row


def test_a_comma_list_makes_a_side_of_several_runs(tmp_path: Path) -> None:
    runs = [write(tmp_path, bench_receipt(speeds(noisy(100, N, 0.01, s)), when=day(s))) for s in range(1, 9)]
    sides = [",".join(map(str, runs[:4])), ",".join(map(str, runs[4:]))]
    res = invoke(APP, ["compare", *sides, "--format", "json"])
    out = json.loads(res.stdout)
    assert res.code == EXIT_OK and out["base"] == sides[0] and out["new"] == sides[1]
    assert out["runs"] == {"base": 4, "new": 4}
    decode = next(r for r in out["rows"] if r["metric"] == "decode tok/s")
    one = json.loads(invoke(APP, ["compare", runs[0], runs[4], "--format", "json"]).stdout)
    assert decode["n base"] == 4 * next(r for r in one["rows"] if r["metric"] == "decode tok/s")["n base"]
    two = invoke(APP, ["compare", f"{runs[0]},{runs[1]}", f"{runs[4]},{runs[5]}", "--format", "json"])
    assert two.code == EXIT_INCONCLUSIVE
    assert [n for n in json.loads(two.stdout)["notes"] if n.startswith("too few runs: with 2 and 2")]
    bad = invoke(APP, ["compare", f"{runs[0]},", runs[4]])
    assert bad.code == 2 and "empty selector" in bad.stderr


def test_tiny_samples_are_inconclusive_with_a_warning(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, 100, 200, n=3)
    res = invoke(APP, ["compare", b, n])
    assert res.code == EXIT_INCONCLUSIVE
    text = " ".join(res.stdout.split())
    assert "too few samples" in text and "smallest reachable p-value is 0.1" in text
    assert "verdict: inconclusive" in text


def test_threshold_option_changes_the_verdict(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, 100, 93)
    assert invoke(APP, ["compare", b, n]).code == EXIT_REGRESSION
    assert invoke(APP, ["compare", b, n, "--threshold", "10"]).code in (EXIT_OK, EXIT_INCONCLUSIVE)


NON_COMPARABLE = {
    "model_sha256": lambda r: r["model"].__setitem__("sha256", "cd" * 32),
    "preset": lambda r: r["model"].__setitem__("preset", "small"),
    "threads": lambda r: r.__setitem__("threads", 1),
    "cpu_model": lambda r: r["host"].__setitem__("cpu_model", "Other CPU"),
    "machine": lambda r: r["host"].__setitem__("cores", 64),
    "workload": lambda r: r.__setitem__("seed", 5),
}


@pytest.mark.parametrize("reason", sorted(NON_COMPARABLE))
def test_non_comparable_pairs_are_refused_with_the_reason(tmp_path: Path, reason: str) -> None:
    b, n = _pair(tmp_path, 100, 70, edit=NON_COMPARABLE[reason])
    res = invoke(APP, ["compare", b, n])
    assert res.code == EXIT_ERROR
    assert f"not comparable ({reason})" in res.stderr
    assert "--force" in res.stderr
    forced = invoke(APP, ["compare", b, n, "--force"])
    assert forced.code == EXIT_REGRESSION  # compared anyway, reasons still printed
    assert f"not comparable ({reason})" in forced.stderr
    ignored = invoke(APP, ["compare", b, n, "--ignore", reason])
    assert ignored.code == EXIT_REGRESSION and "not comparable" not in ignored.stderr


def test_schema_version_and_verification_reasons() -> None:
    base = bench_receipt(speeds([100] * 4))
    other = dict(base, schema_version="2.0.0")
    keys = {r.key for r in comparability(base, other)}
    assert {"schema_version", "verification"} <= keys
    tampered = dict(base, tokens_per_second=base["tokens_per_second"] * 2)
    reasons = comparability(base, tampered)
    assert [r.key for r in reasons] == ["verification"]
    assert "NEW fails verification" in reasons[0].message and "throughput" in reasons[0].message
    for key in ("verification", "colour"):  # verification is no check --ignore may skip
        with pytest.raises(Exception, match="unknown comparability check"):
            comparability(base, tampered, ignore=[key])
    forced = compare(base, tampered, force=True)
    assert forced.refused and forced.exit_code == 2 and not forced.rows


def test_compare_refuses_an_unverified_receipt_with_one_line(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, 100, 100)
    data = json.loads(n.read_text())
    data["tokens_per_second"] *= 2
    n.write_text(json.dumps(data))
    for extra in ([], ["--force"], ["--comparability-only"]):
        res = invoke(APP, ["compare", b, n, *extra])
        assert res.code == 2, res
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "fails verification (gate throughput:" in lines[0]


def test_a_receipt_with_unreliable_speed_makes_the_verdict_inconclusive() -> None:
    def busy_timing(r):
        step = {"embed": 1e-5, "forward": 1.0, "logits": 1e-3, "sample": 1e-5, "layers": [0.4, 0.4]}
        steps = [step, dict(step, forward=1.1)]
        r["phases"]["timing"] = {"steps": steps, "percentiles": {}}
        stages = ("embed", "forward", "logits", "sample")
        pct = {k: percentiles([s[k] for s in steps]) for k in stages}
        pct["total"] = percentiles([sum(s[k] for k in stages) for s in steps])
        r["phases"]["timing"]["percentiles"] = pct

    base = bench_receipt(speeds(noisy(100, 10, 0.01, 1)))
    slower = bench_receipt(speeds(noisy(50, 10, 0.01, 2)), edit=busy_timing)
    assert compare(base, bench_receipt(speeds(noisy(50, 10, 0.01, 2)))).exit_code == EXIT_REGRESSION
    comp = compare(base, slower)
    assert comp.exit_code == 3 and "NEW: speed unreliable (timing_consistency)" in comp.unreliable[0]


def test_a_phase_receipt_is_not_comparable_and_says_why() -> None:
    base = bench_receipt(speeds([100] * 4))
    for phase in ("probe", "timing"):
        reasons = comparability(base, make_phase_receipt(phase))
        assert [(r.key, r.message) for r in reasons] == [
            ("workload", f"NEW is a {phase} receipt; compare judges benchmark receipts")
        ]


def test_unknown_schema_version_file_is_an_error(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, 100, 100)
    data = json.loads(n.read_text())
    data["schema_version"] = "9.9.9"
    n.write_text(json.dumps(data))
    res = invoke(APP, ["compare", b, n])
    assert res.code == EXIT_ERROR and "schema_version" in res.stderr


def test_output_formats(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, 100, 70)
    md = invoke(APP, ["compare", b, n, "--format", "md"])
    assert md.code == EXIT_REGRESSION
    assert md.stdout.startswith("**Verdict: regression**")
    assert "| metric | n | BASE | NEW | NEW/BASE | 95% CI | p | MDE | verdict |" in md.stdout
    assert "minimum detectable effect on decode tok/s: " in md.stdout and "decode step floor: " in md.stdout
    assert "| --- |" in md.stdout and "geomean speed-up" in md.stdout
    csv = invoke(APP, ["compare", b, n, "--format", "csv"])
    table = pd.read_csv(io.StringIO(csv.stdout))
    assert list(table["metric"])[:3] == ["decode tok/s", "decode step floor", "prefill tok/s"]
    assert {"ratio", "ci low", "ci high", "p", "verdict"} <= set(table.columns)
    assert table.loc[0, "verdict"] == "regression"
    js = json.loads(invoke(APP, ["compare", b, n, "--format", "json"]).stdout)
    assert js["exit_code"] == EXIT_REGRESSION and js["comparable"] is True
    assert js["rows"][0]["ratio"] == pytest.approx(0.7, rel=0.03)
    rich = invoke(APP, ["compare", b, n])
    assert "decode tok/s" in rich.stdout and "verdict: regression" in rich.stdout


def test_selectors_reach_compare(tmp_path: Path) -> None:
    _pair(tmp_path, 100, 70)
    res = invoke(APP, ["compare", "latest~1", "latest", "--archive", tmp_path])
    assert res.code == EXIT_REGRESSION
    assert invoke(APP, ["compare", "2025-01-01", "2025-01-02", "--archive", tmp_path]).code == EXIT_REGRESSION
    missing = invoke(APP, ["compare", "latest~5", "latest", "--archive", tmp_path])
    assert missing.code == EXIT_ERROR and "holds only 2 benchmark receipts" in missing.stderr


def test_comparability_only_mode(tmp_path: Path) -> None:
    def elsewhere(r: dict) -> None:
        r["host"]["cpu_model"] = "CI CPU"
        r["host"]["cores"] = r["threads"] = 4

    b, n = _pair(tmp_path, 100, 10, edit=elsewhere)
    strict = invoke(APP, ["compare", b, n, "--comparability-only"])
    assert strict.code == EXIT_ERROR and "cpu_model" in strict.stderr and "threads" in strict.stderr
    assert "machine" in strict.stderr  # 4 cores, not 2: another machine
    ignored = ["--ignore", "cpu_model", "--ignore", "threads", "--ignore", "machine"]
    ok = invoke(APP, ["compare", b, n, "--comparability-only", *ignored])
    assert ok.code == EXIT_OK  # a 10x slower run is fine here: speed is not judged
    assert "comparable and verified" in ok.stdout

    def other_tokens(r: dict) -> None:
        elsewhere(r)
        digest = "ef" * 32
        r["output_digest"]["sha256"] = digest
        for rep in r["phases"]["benchmark"]["repetitions"]:
            rep["output_sha256"] = digest

    b2, n2 = _pair(tmp_path / "o", 100, 100, edit=other_tokens)
    res = invoke(
        APP, ["compare", b2, n2, "--comparability-only", "--ignore", "cpu_model", "--ignore", "threads"]
    )
    assert res.code == EXIT_ERROR and "not comparable (output)" in res.stderr
    # in a speed comparison different tokens are a note, not a refusal
    assert compare(load_receipt(b2), load_receipt(n2), ignore=["cpu_model", "threads", "machine"]).notes


def test_peak_rss_from_one_process_is_not_judged() -> None:
    base = bench_receipt(speeds(noisy(100, N, 0.01, 1)))
    new = bench_receipt(speeds(noisy(100, N, 0.01, 2)), edit=lambda r: r.__setitem__("peak_rss_bytes", 10**9))
    rss = {r.metric.key: r.judgement for r in compare(base, new).rows}["peak_rss_bytes"]
    assert rss.verdict is Verdict.REGRESSION
    shared = {r.metric.key: r.judgement for r in compare(base, new, same_process=True).rows}["peak_rss_bytes"]
    assert shared.verdict is Verdict.NOT_JUDGED


def test_peak_rss_of_several_runs_needs_the_runs_to_decide() -> None:
    """Peak RSS moves between processes of one build too: with several runs per side it takes the runs'
    rule (two per side cannot decide), not the threshold alone."""

    def run(seed: int, rss: int) -> dict:
        return bench_receipt(
            speeds(noisy(100, N, 0.01, seed)), edit=lambda r: r.__setitem__("peak_rss_bytes", rss)
        )

    def rss_verdict(base: list[dict], new: list[dict]) -> Verdict:
        return {r.metric.key: r.judgement for r in compare(base, new).rows}["peak_rss_bytes"].verdict

    mib = 2**20
    assert rss_verdict([run(1, 400 * mib), run(2, 404 * mib)], [run(3, 440 * mib), run(4, 446 * mib)]) is (
        Verdict.INCONCLUSIVE
    )
    base = [run(s, (400 + s) * mib) for s in range(4)]
    assert rss_verdict(base, [run(10 + s, (480 + s) * mib) for s in range(4)]) is Verdict.REGRESSION
    assert rss_verdict(base, [run(10 + s, (401 + s) * mib) for s in range(4)]) is Verdict.NO_CHANGE


def test_bad_threshold_is_an_error(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, 100, 100)
    assert invoke(APP, ["compare", b, n, "--threshold", "150"]).code == EXIT_ERROR
    assert invoke(APP, ["compare", b, n, "--alpha", "0"]).code == EXIT_ERROR


# ---------------------------------------------------------------- real receipts from the tiny preset
TINY = ["--preset", "tiny", "--threads", "1", "--tokens", "8", "--prompt-tokens", "4", "--no-bandwidth"]


@pytest.fixture(scope="module")
def real_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    os.environ["BITNET_HARNESS_CACHE"] = str(tmp_path_factory.getbasetemp() / "harness-cache")
    folder = tmp_path_factory.mktemp("real-archive")
    for _ in range(2):
        args = [
            "benchmark",
            *TINY,
            "--repetitions",
            "4",
            "--no-probe",
            "--no-timing",
            "--receipts-dir",
            folder,
        ]
        res = invoke(APP, args)
        assert res.code == 0, res.stdout + res.stderr
    return folder


def test_compare_two_real_tiny_receipts(real_archive: Path) -> None:
    res = invoke(APP, ["compare", "latest~1", "latest", "--archive", real_archive])
    assert res.code in (EXIT_OK, EXIT_REGRESSION, EXIT_INCONCLUSIVE), res.stderr
    for label in (
        "decode tok/s",
        "prefill tok/s",
        "time to first",
        "token latency p50",
        "peak RSS",
        "geomean",
    ):
        assert label in res.stdout
    js = json.loads(
        invoke(APP, ["compare", "latest~1", "latest", "--archive", real_archive, "--format", "json"]).stdout
    )
    assert js["comparable"] is True and len(js["rows"]) == 8
    rows = {r["metric"]: r for r in js["rows"]}
    assert rows["decode tok/s"]["n base"] == 4 * 7  # every decode step: 8 tokens, the first from the prefill
    assert rows["prefill tok/s"]["n base"] == rows["time to first token"]["n base"] == 4
    assert rows["decode tok/s"]["mde"] > 0 and rows["prefill tok/s"]["mde"] > 0


def test_benchmark_compare_to_runs_archives_and_compares(real_archive: Path) -> None:
    before = sorted(real_archive.glob("*.json"))
    args = ["benchmark", *TINY, "--repetitions", "4", "--no-probe", "--no-timing"]
    res = invoke(APP, [*args, "--receipts-dir", real_archive, "--compare-to", "latest", "--json"])
    assert res.code in (EXIT_OK, EXIT_REGRESSION, EXIT_INCONCLUSIVE), res.stderr
    out = json.loads(res.stdout)
    after = sorted(real_archive.glob("*.json"))
    assert len(after) == len(before) + 1 and Path(out["path"]) in after
    assert out["comparison"]["base"] == str(before[-1])  # `latest` meant the newest before this run
    assert out["comparison"]["exit_code"] == res.code
    bad = invoke(APP, [*args, "--receipts-dir", real_archive, "--compare-to", "nothing-like-this"])
    assert bad.code == EXIT_ERROR and len(sorted(real_archive.glob("*.json"))) == len(after)


def test_benchmark_ab_kernel_interleaved(tmp_path: Path, real_archive: Path) -> None:
    args = ["benchmark", *TINY, "--repetitions", "4", "--warmup", "1", "--ab-kernel", "i2s,tl2"]
    res = invoke(APP, [*args, "--receipts-dir", tmp_path, "--json"])
    assert res.code in (EXIT_OK, EXIT_REGRESSION, EXIT_INCONCLUSIVE), res.stderr
    out = json.loads(res.stdout)
    assert [s["kernel"] for s in out["sides"]] == ["i2s", "tl2"]
    assert all(s["verification"]["valid"] for s in out["sides"])
    receipts = [load_receipt(s["path"]) for s in out["sides"]]
    assert [r["kernel_choice"]["requested"] for r in receipts] == ["i2s", "tl2"]
    assert any(k.startswith("tl2_") for k in receipts[1]["kernels"])
    assert not any(k.startswith("tl2_") for k in receipts[0]["kernels"])
    assert all(len(r["phases"]["benchmark"]["repetitions"]) == 4 for r in receipts)
    rss = next(r for r in out["comparison"]["rows"] if r["metric"] == "peak RSS")
    assert rss["verdict"] == "not judged"


def test_bad_ab_options_are_refused_before_running(tmp_path: Path) -> None:
    args = ["benchmark", *TINY, "--repetitions", "2", "--receipts-dir", tmp_path]
    for bad in (
        ["--ab-kernel", "i2s"],
        ["--ab-kernel", "i2s,i2s"],
        ["--ab-kernel", "i2s,gpu"],
        ["--ab-threads", "1,x"],
        ["--ab-threads", "1,999"],
        ["--ab-kernel", "i2s,tl2", "--ab-threads", "1,2"],
        ["--ab-kernel", "i2s,tl2", "--compare-to", "latest"],
    ):
        res = invoke(APP, [*args, *bad])
        assert res.code == EXIT_ERROR and res.stderr.startswith("error: "), bad
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.slow
def test_benchmark_ab_threads(tmp_path: Path, real_archive: Path) -> None:
    args = ["benchmark", "--preset", "tiny", "--tokens", "3", "--prompt-tokens", "2", "--no-bandwidth"]
    args += ["--repetitions", "2", "--warmup", "0"]
    res = invoke(APP, [*args, "--ab-threads", "1,2", "--receipts-dir", tmp_path, "--json"])
    assert res.code in (EXIT_OK, EXIT_REGRESSION, EXIT_INCONCLUSIVE), res.stderr
    out = json.loads(res.stdout)
    per_rep = [r for r in out["comparison"]["rows"] if r["metric"] == "prefill tok/s"][0]
    assert per_rep["verdict"] == "inconclusive"  # 2 vs 2 repetitions can never be significant
    assert per_rep["mde"] is None and "too few samples" in per_rep["note"]
    assert [s["threads"] for s in out["sides"]] == [1, 2]
    assert out["comparison"]["comparable"] is True  # threads are what the run varies
    assert all(s["verification"]["valid"] for s in out["sides"])
