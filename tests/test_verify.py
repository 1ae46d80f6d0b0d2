"""Verifier gates (one passing and one failing receipt each) and the verify-receipt / report commands."""

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest
import typer
from typer.testing import CliRunner

from harness.commands import report, verify_receipt
from harness.receipts.digest import finalize
from harness.receipts.files import utc_timestamp
from harness.receipts.verify import verify
from tests.receipt_factory import make_phase_receipt, make_receipt, mutated


def gates(result) -> list[str]:
    return [f.gate for f in result.failures]


def test_factory_receipt_passes_every_gate():
    result = verify(make_receipt())
    assert result.ok, [f.line() for f in result.failures]
    assert result.skipped == ["model_hash", "replay"]
    assert "kernel_expectations" in result.passed and "throughput" in result.passed


def _set(path, value):
    def edit(receipt):
        node = receipt
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _drop_kernel(kid):
    def edit(receipt):
        receipt["kernels"].remove(kid)
        del receipt["kernel_counts"][kid]

    return edit


def _add_kernel(kid, calls=1):
    def edit(receipt):
        receipt["kernels"].append(kid)
        receipt["kernel_counts"][kid] = {"calls": calls, "rows": 1, "elements": 1}

    return edit


def _only_fallbacks(receipt):
    for kid in ("i2s_gemm", "i2s_gemv"):
        _drop_kernel(kid)(receipt)
    _add_kernel("fp32_logits")(receipt)


FAILING = {
    "compute_path": _set(("compute_path",), "mock"),
    "backend": _set(("backend",), "cuda"),
    "ternary_kernel": _only_fallbacks,
    "gpu_kernels": _add_kernel("cuda_gemv_i2s"),
    "known_kernels": _add_kernel("i2s_turbo_gemv"),
    "kernel_counts": lambda r: r["kernels"].append("tl1_gemv"),
    "kernel_expectations": lambda r: r["kernel_counts"]["rmsnorm"].__setitem__("calls", 1),
    "throughput": lambda r: r.__setitem__("tokens_per_second", r["tokens_per_second"] * 1.05),
    "summaries": lambda r: r["phases"]["timing"]["percentiles"]["forward"].__setitem__("p50", 1.0),
    "tokens": _set(("tokens_generated",), 3),
    "determinism": _set(("phases", "benchmark", "repetitions", 2, "output_sha256"), "cd" * 32),
    "timestamps": _set(("started_at",), utc_timestamp(datetime.now(timezone.utc) + timedelta(hours=1))),
    "bandwidth": _set(("bandwidth", "ratio_to_floor"), 0.5),
    "kernel_variants": _set(("host", "cpu_flags"), ["avx2", "fma"]),
}


@pytest.mark.parametrize("gate", sorted(FAILING))
def test_each_gate_fails_on_its_problem(gate):
    result = verify(mutated(FAILING[gate]))
    assert gate in gates(result), [f.line() for f in result.failures]
    assert gate not in result.passed


@pytest.mark.parametrize("gate", sorted(FAILING))
def test_each_gate_passes_the_valid_receipt(gate):
    assert gate in verify(make_receipt()).passed


def test_fallback_only_receipt_names_the_missing_ternary_kernel():
    result = verify(mutated(_only_fallbacks))
    failure = next(f for f in result.failures if f.gate == "ternary_kernel")
    assert "fp32_logits" in failure.found and "i2s_" in failure.expected


@pytest.mark.parametrize(
    "kid", ["fp32_matmul", "fallback_gemv", "dequant_i2s", "i2s_dequant", "tl1_fallback", "matmul_f32"]
)
def test_fallback_names_do_not_count_as_ternary(kid):
    def edit(receipt):
        _only_fallbacks(receipt)
        _add_kernel(kid)(receipt)

    assert "ternary_kernel" in gates(verify(mutated(edit)))


@pytest.mark.parametrize(
    "kid", ["cuda_gemv", "cublas_sgemm", "gemm_i2s", "wmma_tile", "i2s_gpu_gemv", "tl2_gpu"]
)
def test_gpu_ids_are_flagged_on_cpu(kid):
    result = verify(mutated(_add_kernel(kid)))
    failure = next(f for f in result.failures if f.gate == "gpu_kernels")
    assert kid in failure.found
    assert "known_kernels" not in gates(result)


def test_kernel_counted_but_not_listed_and_zero_calls():
    result = verify(mutated(lambda r: r["kernels"].remove("rope_neox")))
    assert any(f.gate == "kernel_counts" and "counted but not listed" in f.found for f in result.failures)
    result = verify(mutated(_add_kernel("tl1_gemv", calls=0)))
    assert any(f.gate == "kernel_counts" and "zero calls" in f.found for f in result.failures)


def test_expectations_check_matmul_work_against_model_shape():
    def inflate(receipt):
        receipt["kernel_counts"]["i2s_gemv"]["elements"] *= 2

    failure = next(f for f in verify(mutated(inflate)).failures if f.gate == "kernel_expectations")
    assert "GEMV" in failure.expected and "elements" in failure.expected


def test_expectations_follow_the_layer_count():
    result = verify(mutated(_set(("model", "n_layers"), 3)))
    assert "kernel_expectations" in gates(result)


def test_split_kernel_choice_counts_as_one_matmul_group():
    def split(receipt):
        gemv = receipt["kernel_counts"]["i2s_gemv"]
        half = {k: v // 2 for k, v in gemv.items()}
        receipt["kernel_counts"]["tl1_gemv"] = {k: gemv[k] - half[k] for k in gemv}
        receipt["kernel_counts"]["i2s_gemv"] = half
        receipt["kernels"].append("tl1_gemv")
        receipt["kernel_choice"]["variants"]["tl1_gemv"] = "avx512bw"

    assert verify(mutated(split)).ok


def test_edited_summary_throughput_is_caught():
    def edit(receipt):
        receipt["phases"]["benchmark"]["summary"]["tokens_per_second"] *= 0.9

    failure = next(f for f in verify(mutated(edit)).failures if f.gate == "throughput")
    assert "summary" in failure.expected


def test_throughput_within_one_percent_passes():
    assert verify(mutated(lambda r: r.__setitem__("tokens_per_second", r["tokens_per_second"] * 1.005))).ok


def test_throughput_needs_raw_samples():
    result = verify(mutated(lambda r: r["phases"].pop("benchmark")))
    assert "throughput" in gates(result)


@pytest.mark.parametrize("phase", ["probe", "timing"])
def test_a_phase_receipt_verifies_and_says_what_does_not_apply(phase):
    result = verify(make_phase_receipt(phase))
    assert result.ok, [f.line() for f in result.failures]
    assert {"throughput", "tokens", "determinism"} <= set(result.skipped)
    assert {"schema", "kernel_expectations", "kernel_variants", "ternary_kernel"} <= set(result.passed)


def _phase_edit(phase, edit):
    receipt = make_phase_receipt(phase)
    edit(receipt)
    return finalize(receipt)


def _count(kid, counter, delta):
    return lambda r: r["kernel_counts"][kid].__setitem__(counter, r["kernel_counts"][kid][counter] + delta)


@pytest.mark.parametrize(
    ("phase", "edit"),
    [
        ("probe", _count("tl1_gemv", "calls", 1)),  # one call more than the candidate's samples
        ("probe", _count("i2s_gemv", "elements", -64)),
        ("probe", lambda r: r["phases"]["probe"]["candidates"][0]["seconds"].pop()),
        ("timing", _count("i2s_gemv", "calls", -7)),  # one decode step fewer than the steps recorded
        ("timing", _count("i2s_gemm", "rows", 1)),  # the prefill counted over another prompt length
    ],
)
def test_a_phase_receipts_counters_are_held_against_its_own_work(phase, edit):
    assert set(gates(verify(_phase_edit(phase, edit)))) == {"kernel_expectations"}


def test_a_probe_receipt_cannot_count_a_kernel_it_did_not_probe():
    def add_gemm(r):
        r["kernel_counts"]["i2s_gemm"] = {"calls": 1, "rows": 64, "elements": 4096}
        r["kernels"] = sorted(r["kernel_counts"])
        r["kernel_choice"]["variants"]["i2s_gemm"] = "portable"

    assert "kernel_expectations" in gates(verify(_phase_edit("probe", add_gemm)))


def test_benchmark_figures_without_a_benchmark_phase_or_no_phase_at_all_fail():
    claims = _phase_edit("timing", lambda r: r.__setitem__("tokens_per_second", 99.0))
    assert "throughput" in gates(verify(claims))
    empty = _phase_edit("timing", lambda r: r.__setitem__("phases", {}))
    assert "throughput" in gates(verify(empty))


def test_future_timestamp_and_layer_times_longer_than_forward():
    future = utc_timestamp(datetime.now(timezone.utc) + timedelta(hours=2))
    result = verify(mutated(_set(("timestamp",), future)))
    assert any(f.gate == "timestamps" and "future" in f.expected for f in result.failures)
    result = verify(mutated(_set(("phases", "timing", "steps", 0, "layers"), [0.003, 0.003])))
    assert "summaries" in gates(result)


def test_tampered_digest_is_caught():
    receipt = make_receipt()
    receipt["tokens_per_second"] *= 2
    receipt["phases"]["benchmark"]["summary"]["tokens_per_second"] *= 2
    result = verify(receipt)
    assert "content_digest" in gates(result)
    receipt = make_receipt()
    receipt["content_digest"] = "0" * 64
    assert gates(verify(receipt)) == ["content_digest"]


def test_three_problems_give_three_failures():
    def edit(receipt):
        receipt["compute_path"] = "mock"
        receipt["tokens_per_second"] *= 1.5
        receipt["kernels"].append("tl2_gemv")

    result = verify(mutated(edit))
    assert sorted(gates(result)) == ["compute_path", "kernel_counts", "throughput"]


def test_schema_and_gate_failures_are_reported_together():
    receipt = mutated(lambda r: (r.pop("host"), r.__setitem__("compute_path", "mock")))
    result = verify(receipt)
    assert gates(result) == ["schema", "compute_path"]


def test_garbage_receipts_do_not_crash():
    for obj in ({}, [], "x", {"kernels": "not a list", "kernel_counts": 5}, {"phases": {"benchmark": []}}):
        result = verify(obj)
        assert not result.ok and "schema" in gates(result)


def _model_file(tmp_path, data=b"GGUF" + bytes(range(256)) * 10):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "m.gguf"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest(), len(data)


def test_model_hash_matches_and_mismatches(tmp_path):
    path, digest, size = _model_file(tmp_path)

    def point_at_file(receipt):
        receipt["model"]["sha256"] = digest
        receipt["model"]["size_bytes"] = size

    good = mutated(point_at_file)
    result = verify(good, model_path=path)
    assert result.ok and "model_hash" in result.passed
    other, _, _ = _model_file(tmp_path / "x", b"GGUF" + b"\0" * (size - 4))
    bad = verify(good, model_path=other)
    assert gates(bad) == ["model_hash"]
    assert digest in bad.failures[0].found


def test_model_hash_of_missing_file_is_unusable_input(tmp_path):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="does not exist"):
        verify(make_receipt(), model_path=tmp_path / "none.gguf")


def test_replay_gate_uses_the_injected_callable():
    receipt = make_receipt()
    seen = []

    def same(r):
        seen.append(r["output_digest"]["count"])
        return r["output_digest"]["sha256"]

    result = verify(receipt, replay=same)
    assert result.ok and "replay" in result.passed and seen == [4]
    result = verify(receipt, replay=lambda r: "ef" * 32)
    assert gates(result) == ["replay"]
    assert result.failures[0].found == "ef" * 32


def test_replay_is_not_run_on_a_schema_invalid_receipt():
    receipt = mutated(lambda r: r.pop("host"))
    calls = []
    result = verify(receipt, replay=lambda r: calls.append(r) or "")
    assert calls == [] and "replay" in result.skipped


# command line


@pytest.fixture
def run():
    app = typer.Typer()
    verify_receipt.register(app)
    report.register(app)
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def _save(tmp_path, obj, name="r.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return path


def test_cli_valid_receipt_exits_0(run, tmp_path):
    result = run("verify-receipt", "--path", _save(tmp_path, make_receipt()))
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output


def test_cli_invalid_receipt_exits_1_and_lists_every_failure(run, tmp_path):
    receipt = mutated(lambda r: (r.__setitem__("compute_path", "mock"), r["kernels"].append("tl2_gemv")))
    result = run("verify-receipt", "--path", _save(tmp_path, receipt))
    assert result.exit_code == 1
    assert "FAIL compute_path" in result.output and "FAIL kernel_counts" in result.output
    assert "INVALID (2 failures)" in result.output


def test_cli_json_output_parses(run, tmp_path):
    receipt = mutated(_set(("compute_path",), "mock"))
    result = run("verify-receipt", "--path", _save(tmp_path, receipt), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert data["failures"][0]["gate"] == "compute_path"
    assert set(data["failures"][0]) == {"gate", "expected", "found", "action"}
    saved = _save(tmp_path, make_receipt(), "ok.json")
    ok = json.loads(run("verify-receipt", "--path", saved, "--json").stdout)
    assert ok["valid"] is True and ok["failures"] == []


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        "[1, 2]",
        '{"schema_version": "9.9.9"}',
        "{}",
        '{"a": NaN}',
        '{"a": 1, "a": 1}',
        "[" * 50_000 + "]" * 50_000,
    ],
)
def test_cli_unusable_input_exits_2(run, tmp_path, content):
    result = run("verify-receipt", "--path", _save(tmp_path, content))
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output


def test_cli_directory_and_missing_file_exit_2(run, tmp_path):
    assert run("verify-receipt", "--path", tmp_path).exit_code == 2
    assert run("verify-receipt", "--path", tmp_path / "nope.json").exit_code == 2
    assert run("report", tmp_path).exit_code == 2


def test_cli_unusable_input_with_json_is_json(run, tmp_path):
    result = run("verify-receipt", "--path", _save(tmp_path, "[]"), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["valid"] is None


def test_cli_model_check(run, tmp_path):
    path, digest, size = _model_file(tmp_path)
    receipt = mutated(lambda r: r["model"].update(sha256=digest, size_bytes=size))
    saved = _save(tmp_path, receipt)
    assert run("verify-receipt", "--path", saved, "--model", path).exit_code == 0
    other, _, _ = _model_file(tmp_path / "o", b"x" * 10)
    assert run("verify-receipt", "--path", saved, "--model", other).exit_code == 1
    assert run("verify-receipt", "--path", saved, "--model", tmp_path / "missing.gguf").exit_code == 2


def test_cli_replay_unavailable_exits_2(run, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "harness.session.replay", None)
    result = run("verify-receipt", "--path", _save(tmp_path, make_receipt()), "--replay", "--model", tmp_path)
    assert result.exit_code == 2
    assert "replay is unavailable" in result.output


def test_cli_replay_uses_harness_replay(run, tmp_path, monkeypatch):
    import sys
    import types

    path, digest, size = _model_file(tmp_path)
    receipt = mutated(lambda r: r["model"].update(sha256=digest, size_bytes=size))
    fake = types.ModuleType("harness.session.replay")
    fake.replay_digest = lambda r, m, strict=None: r["output_digest"]["sha256"] if m == path else "0" * 64
    fake.replay_model_path = lambda r, model: model
    monkeypatch.setitem(sys.modules, "harness.session.replay", fake)
    saved = _save(tmp_path, receipt)
    assert run("verify-receipt", "--path", saved, "--replay", "--model", path).exit_code == 0
    fake.replay_digest = lambda r, model_path, strict=None: "1" * 64
    result = run("verify-receipt", "--path", saved, "--replay", "--model", path)
    assert result.exit_code == 1 and "FAIL replay" in result.output


def test_cli_report_renders_valid_and_invalid_receipts(run, tmp_path):
    result = run("report", _save(tmp_path, make_receipt()))
    assert result.exit_code == 0
    for text in ("VALID", "i2s_gemv", "rmsnorm", "Benchmark", "Timing", "Probe", "tiny"):
        assert text in result.output
    broken = mutated(lambda r: (r.pop("host"), r["kernels"].append("[red]cuda_x")))
    result = run("report", _save(tmp_path, broken, "b.json"))
    assert result.exit_code == 0
    assert "INVALID" in result.output and "[red]cuda_x" in result.output


def test_cli_report_of_a_timing_receipt_prints_its_tables(run, tmp_path):
    result = run("report", _save(tmp_path, make_phase_receipt("timing")))
    assert result.exit_code == 0, result.output
    for text in (
        "timing receipt",
        "VALID",
        "Timing: decode step stages",
        "per-layer time",
        "step 2",
        "forward",
    ):
        assert text in result.output
    assert "Benchmark" not in result.output and "decode tokens/s" not in result.output
    probe = run("report", _save(tmp_path, make_phase_receipt("probe"), "p.json"))
    assert probe.exit_code == 0 and "probe receipt" in probe.output
    assert "Probe: weight tensors" in probe.output and "tl1_gemv" in probe.output


def test_cli_verify_a_phase_receipt_lists_what_was_not_checked(run, tmp_path):
    result = run("verify-receipt", "--path", _save(tmp_path, make_phase_receipt("probe")))
    assert result.exit_code == 0, result.output
    assert "VALID" in result.output and "skipped: throughput, tokens, determinism" in result.output


def test_every_schema_error_is_reported_up_to_a_cap():
    receipt = make_receipt()
    receipt["phases"]["benchmark"]["repetitions"][0]["decode_seconds"] = ["x"] * 5
    assert gates(verify(receipt)).count("schema") == 5
    receipt["phases"]["benchmark"]["repetitions"][0]["decode_seconds"] = ["x"] * 500
    schema_failures = [f for f in verify(receipt).failures if f.gate == "schema"]
    assert len(schema_failures) == 101 and "400 more" in schema_failures[-1].found


@pytest.mark.parametrize(("ffn_act", "logits"), [("relu2", "int8"), ("silu", "fp32")])
def test_expectations_agree_with_the_engines_trace_prediction(ffn_act, logits):
    """The engine's own per-tensor prediction, summed over repetitions, meets every expectation exactly."""
    from engine.config import ModelConfig
    from harness.receipts.expectations import Workload, expected_counts
    from tests.trace_prediction import expected_counts as engine_counts

    config = ModelConfig(
        arch="bitnet",
        n_layers=3,
        hidden=64,
        ffn=96,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        vocab_size=50,
        context_length=64,
        rope_theta=1e4,
        rms_eps=1e-5,
        ffn_act=ffn_act,
        weight_format="tq2_0",
        file_type=37,
    )
    names = [
        f"blk.{i}.{n}.weight"
        for i in range(3)
        for n in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    ]
    choice = {
        n: ("tl1_gemv", "tl1_gemm") if i % 2 else ("i2s_blk_gemv", "i2s_blk_gemm")
        for i, n in enumerate(names)
    }
    total: dict[str, dict[str, int]] = {}
    for steps in (5, 3):
        for kid, row in engine_counts(config, 6, steps, choice, logits).items():
            for key, value in row.items():
                total.setdefault(kid, {"calls": 0, "rows": 0, "elements": 0})[key] += value
    model = {
        k: getattr(config, k) for k in ("n_layers", "hidden", "ffn", "n_heads", "n_kv_heads", "head_dim")
    }
    int8 = total.get("logits_i8", {}).get("calls", 0)
    exps = expected_counts(model, Workload(2, 12, 8), sorted(total), int8)
    covered = {kid for e in exps for kid in e.ids}
    assert set(total) <= covered
    for exp in exps:
        for counter, bounds in (("calls", exp.calls), ("rows", exp.rows), ("elements", exp.elements)):
            if bounds is not None:
                got = sum(total[k][counter] for k in exp.ids if k in total)
                assert bounds[0] <= got <= bounds[1], (exp.group, counter, got, bounds)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set(("kernel_choice", "variants", "tl1_gemv"), "avx512bw"), "variants only for kernels that ran"),
        (lambda r: r["kernel_choice"]["variants"].pop("i2s_gemv"), "a variant for every ternary"),
        (lambda r: r["kernel_choice"]["variants"].pop("logits_i8"), "a variant for every ternary"),
        (_set(("host", "cpu_flags"), ["avx512_vnni", "avx2"]), "avx512_vnni, avx512vl for i2s_gemm"),
    ],
)
def test_kernel_variants_must_match_the_run_and_the_host(edit, expected):
    result = verify(mutated(edit))
    failed = [f for f in result.failures if f.gate == "kernel_variants"]
    assert failed and any(expected in f.expected for f in failed), [f.line() for f in result.failures]


def test_kernel_variants_are_optional_and_unknown_paths_are_schema_errors():
    old = verify(mutated(lambda r: r["kernel_choice"].pop("variants")))
    assert old.ok and "kernel_variants" in old.passed
    bad = verify(mutated(_set(("kernel_choice", "variants", "i2s_gemv"), "avx1024")))
    assert "schema" in gates(bad)
    quiet = verify(mutated(_set(("host", "cpu_flags"), [])))
    assert quiet.ok  # a host that reports no flags: only the run itself is checked
