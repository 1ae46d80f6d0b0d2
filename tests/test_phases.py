"""The three phases end to end on the tiny preset: the benchmark writes a receipt that verifies, replays."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from engine import kernel_choice
from harness.cli import app
from harness.phases.workload import prompt_ids
from harness.receipts.digest import finalize
from harness.receipts.files import load_receipt
from harness.receipts.kind import receipt_kind
from harness.receipts.verify import verify
from harness.session.evidence import gather

runner = CliRunner()
TINY_ARGS = ["--preset", "tiny", "--threads", "1"]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITNET_HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "harness-cache"))


RSS_BEFORE_BENCHMARK = 0


def _resident_bytes() -> int:
    """This process's resident memory now (not its peak: earlier tests in the process may have set that)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module")
def receipt_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("receipts")
    global RSS_BEFORE_BENCHMARK
    RSS_BEFORE_BENCHMARK = _resident_bytes()
    os.environ["BITNET_HARNESS_CACHE"] = str(tmp_path_factory.getbasetemp() / "harness-cache")
    args = ["benchmark", *TINY_ARGS, "--tokens", "12", "--prompt-tokens", "6", "--repetitions", "2"]
    result = runner.invoke(app, [*args, "--receipts-dir", str(folder)])
    assert result.exit_code == 0, result.output
    written = sorted(folder.glob("*.json"))
    assert len(written) == 1
    return written[0]


def test_benchmark_receipt_is_verified_and_complete(receipt_path: Path) -> None:
    receipt = load_receipt(receipt_path)
    assert verify(receipt).ok
    assert receipt["compute_path"] == "real"
    assert set(receipt["phases"]) == {"probe", "timing", "benchmark"}
    assert len(receipt["phases"]["benchmark"]["repetitions"]) == 2
    assert receipt["tokens_per_second"] > 0
    assert receipt["tokens_generated"] == receipt["output_digest"]["count"] > 0
    assert receipt["prompt"]["token_count"] == 6
    assert any(k.startswith("i2s_") for k in receipt["kernels"])
    assert receipt["kernels"] == sorted(receipt["kernel_counts"])
    assert receipt["model"]["preset"] == "tiny"


def test_benchmark_receipt_records_the_prefetch_distances_its_avx2_kernels_ran_with(
    receipt_path: Path,
) -> None:
    """On the AVX2 path the receipt names the per-host prefetch distances with the timings that chose them;
    elsewhere it has none."""
    choice = load_receipt(receipt_path)["kernel_choice"]
    if "avx2" not in choice["variants"].values():
        assert "prefetch" not in choice
        pytest.skip("no kernel ran on the AVX2 path on this host")
    prefetch = choice["prefetch"]
    for target in prefetch["targets"]:
        timings = target["timings_gb_per_s"]
        assert str(target["bytes"]) in timings  # one of the distances timed, not a constant
        assert timings[str(target["bytes"])] >= 0.97 * max(timings.values())
        applied = kernel_choice.prefetch_choice(target["kind"], target["cols"])
        assert target["bytes"] == applied.distance == applied.plan[0]  # the distance the kernels read
    receipt = load_receipt(receipt_path)
    target = receipt["kernel_choice"]["prefetch"]["targets"][0]
    target["bytes"] = int(min(target["timings_gb_per_s"].items(), key=lambda kv: kv[1])[0])  # not chosen
    result = verify(finalize(receipt))
    assert [g.name for g in result.failures] == ["kernel_variants"], result.lines()


@pytest.mark.parametrize("forgery", ["foreign width", "twice", "older form"])
def test_prefetch_targets_must_match_the_model_widths(receipt_path: Path, forgery: str) -> None:
    """A prefetch target at a width the model has no rows of, or a width listed twice, fails; the older
    form (one matrix and one logits distance) still verifies."""
    receipt = load_receipt(receipt_path)
    prefetch = receipt["kernel_choice"].get("prefetch")
    if prefetch is None:
        pytest.skip("no kernel ran on the AVX2 path on this host")
    targets = prefetch["targets"]
    if forgery == "foreign width":
        targets[0]["cols"] += 128
    elif forgery == "twice":
        targets.append(dict(targets[0]))
    else:
        by_kind = {t["kind"]: t for t in targets}
        if set(by_kind) != {"matrix", "logits"}:
            pytest.skip("the older form holds both kinds")
        del prefetch["targets"]
        prefetch.update({f"{k}_bytes": t["bytes"] for k, t in by_kind.items()})
        prefetch["timings_gb_per_s"] = {k: t["timings_gb_per_s"] for k, t in by_kind.items()}
    result = verify(finalize(receipt))
    want = [] if forgery == "older form" else ["kernel_variants"]
    assert [g.name for g in result.failures] == want, result.lines()


@pytest.mark.parametrize("forgery", ["none", "other variant", "other layout", "other family", "removed"])
def test_decode_block_must_agree_with_the_gemv_that_ran(receipt_path: Path, forgery: str) -> None:
    """The tiny i2s model decodes through the compiled block, which the receipt names with its GEMV
    variant; a block on another path, beside another layout's GEMV or with a shape on another family
    fails. Without it (older receipts, step-by-step models) the receipt still verifies."""
    receipt = load_receipt(receipt_path)
    choice = receipt["kernel_choice"]
    assert choice["decode_block"] == choice["variants"]["i2s_gemv"]
    if forgery == "other variant":
        choice["decode_block"] = "portable" if choice["decode_block"] != "portable" else "avx2"
    elif forgery == "other layout":
        receipt["kernel_counts"]["i2s_blk_gemv"] = dict(receipt["kernel_counts"]["i2s_gemv"])
        receipt["kernels"] = sorted(receipt["kernel_counts"])
        choice["variants"]["i2s_blk_gemv"] = "portable"
    elif forgery == "other family":
        choice["per_shape"][0]["kernel"] = "tl1"
    elif forgery == "removed":
        del choice["decode_block"]
    result = verify(finalize(receipt))
    failed = [g.name for g in result.failures]
    if forgery in ("none", "removed"):
        assert failed == [], result.lines()
    else:
        assert "kernel_variants" in failed, result.lines()
        assert any("decode_block" in line for line in result.lines()), result.lines()


def test_benchmark_receipt_floor_and_noise(receipt_path: Path) -> None:
    """Two probes around the measured phases, each beyond the cache and 1 GiB; the floor is their pooled
    median; the noise section holds the system's figures over the measured phases."""
    receipt = load_receipt(receipt_path)
    bw = receipt["bandwidth"]
    llc = receipt["host"]["llc_bytes"]
    assert len(bw["probes"]) == 2
    for probe in bw["probes"]:
        assert probe["buffer_bytes"] >= max(1 << 30, 4 * (llc or 0))
        assert probe["threads"] == receipt["threads"] and len(probe["samples_gbps"]) >= 5
    pooled = [s for p in bw["probes"] for s in p["samples_gbps"]]
    assert bw["read_gbps"] == pytest.approx(float(np.median(pooled)))
    # the probes' 1 GiB buffers lived in child processes: one in this process would have raised its peak to
    # at least what it held before the run plus the buffer (the peak itself may predate the run)
    assert receipt["peak_rss_bytes"] < RSS_BEFORE_BENCHMARK + (1 << 30)
    noise = receipt["noise"]
    assert noise["noisy"] == bool(noise["reasons"])
    assert noise["system"]["seconds"] > 0 and noise["system"]["own_cpu_share"] > 0
    assert noise["samples"]["decode_seconds_per_token"]["n"] == 2
    assert bw["noisy"] == any("read bandwidth before and after" in r for r in noise["reasons"])


def test_verify_receipt_cli_accepts_it_and_replays(receipt_path: Path) -> None:
    result = runner.invoke(app, ["verify-receipt", "--path", str(receipt_path), "--replay", "--json"])
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.output)
    assert verdict["valid"] is True and verdict["level"] == "evidence"
    status = {g["name"]: g["status"] for g in verdict["gates"]}
    assert status["replay"] == status["model_binding"] == "pass"


def test_tampered_receipt_fails_verification(receipt_path: Path, tmp_path: Path) -> None:
    receipt = load_receipt(receipt_path)
    receipt["tokens_per_second"] *= 2
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(receipt))
    result = runner.invoke(app, ["verify-receipt", "--path", str(edited)])
    assert result.exit_code == 1
    assert "FAIL throughput" in result.output and "FAIL checksum" in result.output


def test_receipts_are_never_overwritten(receipt_path: Path) -> None:
    before = receipt_path.read_bytes()
    args = ["benchmark", *TINY_ARGS, "--tokens", "4", "--prompt-tokens", "3", "--repetitions", "1"]
    args += ["--no-probe", "--no-timing", "--receipts-dir", str(receipt_path.parent)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert receipt_path.read_bytes() == before
    assert len(list(receipt_path.parent.glob("*.json"))) == 2


def test_probe_json_covers_every_tensor_and_kernel_family(tmp_path: Path) -> None:
    result = runner.invoke(app, ["probe", *TINY_ARGS, "--json", "--receipts-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    section = json.loads(result.stdout)
    assert len(section["tensors"]) == 24
    kernels = {row["kernel"] for row in section["candidates"]}
    assert kernels == {"i2s_gemv", "tl1_gemv", "tl2_gemv"}
    assert all(row["max_abs_error"] < 1e-3 for row in section["candidates"])
    (path,) = tmp_path.glob("*_probe.json")
    receipt = load_receipt(path)
    assert receipt["phases"] == {"probe": section}
    result = verify(receipt, gather(receipt, model=Path(receipt["model"]["path"])))
    assert result.ok, result.lines()
    assert "kernel_expectations" in result.passed and "model_binding" in result.passed
    assert {"i2s_gemv", "tl1_gemv", "tl2_gemv"} <= set(receipt["kernels"])  # the probe's own calls
    assert "decode_block" not in receipt["kernel_choice"]  # a probe decodes no token


def test_timing_reports_every_layer_of_every_step(tmp_path: Path) -> None:
    args = ["timing", *TINY_ARGS, "--steps", "4", "--prompt-tokens", "5", "--json"]
    result = runner.invoke(app, [*args, "--receipts-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    section = json.loads(result.stdout)
    assert len(section["steps"]) == 4
    assert all(len(step["layers"]) == 2 for step in section["steps"])
    assert all(sum(step["layers"]) <= step["forward"] for step in section["steps"])
    (path,) = tmp_path.glob("*_timing.json")
    receipt = load_receipt(path)
    assert receipt["phases"] == {"timing": section} and receipt["prompt"]["token_count"] == 5
    assert "tokens_per_second" not in receipt and "benchmark" not in receipt["phases"]
    verified = runner.invoke(app, ["verify-receipt", "--path", str(path), "--json"])
    assert verified.exit_code == 0, verified.output
    statuses = {g["name"]: g["status"] for g in json.loads(verified.stdout)["gates"]}
    assert statuses["kernel_expectations"] == "pass"  # 1 prefill + 4 steps, counted
    report = runner.invoke(app, ["report", str(path)], env={"COLUMNS": "160"})
    assert report.exit_code == 0 and "Timing: decode step stages over 4 steps" in report.stdout
    assert "step 4" in report.stdout


def test_prompt_ids_are_cycled_to_the_requested_length() -> None:
    class Tok:
        bos_id = 9

        def encode(self, text: str, add_bos: bool = True) -> list[int]:
            return [1, 2, 3]

    assert prompt_ids(Tok(), "x", 8) == [9, 1, 2, 3, 1, 2, 3, 1]
    assert prompt_ids(Tok(), "x", 2) == [9, 1]
    assert prompt_ids(Tok(), "x", None) == [9, 1, 2, 3]


def test_bad_flags_exit_2_with_one_line() -> None:
    result = runner.invoke(app, ["benchmark", "--preset", "huge"])
    assert result.exit_code == 2


@pytest.mark.slow
def test_scripts_resolve_paths_from_the_callers_folder(tmp_path: Path) -> None:
    """The shell wrappers run from any folder: a relative --model and RECEIPTS_DIR are the caller's."""
    repo = Path(__file__).resolve().parents[1]
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    synth = runner.invoke(
        app, ["model", "synth", "--preset", "tiny", "--out", str(tmp_path / "m" / "t.gguf")]
    )
    assert synth.exit_code == 0, synth.output
    out = tmp_path / "out"
    env = {**os.environ, "PATH": path, "RECEIPTS_DIR": "out"}
    bench = ["--tokens", "3", "--prompt-tokens", "3", "--repetitions", "1", "--no-probe", "--no-timing"]
    for script, extra, kind in (
        ("perf_phase1_quant_probe.sh", [], "probe"),
        ("perf_phase2_timing.sh", ["--steps", "2"], "timing"),
        ("measure_perf_json.sh", bench, "benchmark"),
    ):
        before = set(out.glob("*.json")) if out.is_dir() else set()
        done = subprocess.run(
            [
                "bash",
                str(repo / "scripts" / script),
                "--model",
                "m/t.gguf",
                "--threads",
                "1",
                "--json",
                *extra,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (script, done.stderr)
        assert json.loads(done.stdout)
        (written,) = set(out.glob("*.json")) - before
        receipt = load_receipt(written)
        assert receipt_kind(receipt) == kind and verify(receipt).ok
        assert receipt["model"]["path"] == "m/t.gguf"  # as the caller gave it
