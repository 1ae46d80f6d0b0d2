"""Verifier gates (one passing and one failing receipt each) and the verify-receipt / report commands."""

import copy
import json
from datetime import datetime, timedelta, timezone

import pytest
import typer
from typer.testing import CliRunner

from harness.commands import report, verify_receipt
from harness.receipts.checks import Evidence, ModelFacts, ReplayRun
from harness.receipts.digest import finalize
from harness.receipts.files import utc_timestamp
from harness.receipts.verify import GATES, verify
from harness.session import evidence
from harness.session.evidence import remeasure_rounds
from tests.forgery.forger import forge
from tests.receipt_factory import MODEL, make_phase_receipt, make_receipt, mutated


def gates(result) -> list[str]:
    return [g.name for g in result.failures]


def problems(result, gate):
    return [p for g in result.failures if g.name == gate for p in g.problems]


def test_factory_receipt_passes_every_gate():
    result = verify(make_receipt())
    assert result.ok, result.lines()
    assert [g.name for g in result.not_checked] == [
        "bandwidth_floor",
        "model_binding",
        "replay",
        "remeasure",
        "signature",
    ]
    assert "kernel_expectations" in result.passed and "throughput" in result.passed
    assert [g.name for g in result.gates] == ["schema", *(g.name for g in GATES)]


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
    "harness_version": _set(("harness", "version"), "99.0.0"),
    "parity_only": _add_kernel("act_quant_q8k"),
    "kernel_format": lambda r: _rename_kernels(r, "i2s_", "i2s_qk256_"),
    "kernel_choice": _set(("kernel_choice", "per_shape", 0, "kernel"), "tl2"),
    "model_facts": _set(("model", "tensors_per_format", "i2s"), 7),
    "duplicate_samples": lambda r: _copy_row(r, 0, 1),
    "latencies": _set(("phases", "benchmark", "repetitions", 0, "ttft_seconds"), 0.001),
    "host_resources": _set(("threads",), 4096),
    "probe": _set(("phases", "probe", "candidates", 0, "gbps"), 999.0),
    "checksum": _set(("content_digest",), "0" * 64),
}


def _rename_kernels(receipt, old, new):
    for table in (receipt["kernel_counts"], receipt["kernel_choice"]["variants"]):
        for kid in [k for k in table if k.startswith(old)]:
            table[kid.replace(old, new, 1)] = table.pop(kid)
    receipt["kernels"] = sorted(receipt["kernel_counts"])


def _copy_row(receipt, src, dst):
    reps = receipt["phases"]["benchmark"]["repetitions"]
    reps[dst] = copy.deepcopy(reps[src])


@pytest.mark.parametrize("gate", sorted(FAILING))
def test_each_gate_fails_on_its_problem(gate):
    result = verify(mutated(FAILING[gate], refinalize=gate != "checksum"))
    assert gate in gates(result), result.lines()
    assert gate not in result.passed


@pytest.mark.parametrize("gate", sorted(FAILING))
def test_each_gate_passes_the_valid_receipt(gate):
    assert gate in verify(make_receipt()).passed


def test_fallback_only_receipt_names_the_missing_ternary_kernel():
    result = verify(mutated(_only_fallbacks))
    failure = result.gate("ternary_kernel")
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
    assert kid in result.gate("gpu_kernels").found
    assert "known_kernels" not in gates(result)


def test_kernel_counted_but_not_listed_and_zero_calls():
    result = verify(mutated(lambda r: r["kernels"].remove("rope_neox")))
    assert any("counted but not listed" in p.found for p in problems(result, "kernel_counts"))
    result = verify(mutated(_add_kernel("tl1_gemv", calls=0)))
    assert any("zero calls" in p.found for p in problems(result, "kernel_counts"))


def test_expectations_check_matmul_work_against_model_shape():
    def inflate(receipt):
        receipt["kernel_counts"]["i2s_gemv"]["elements"] *= 2

    failed = problems(verify(mutated(inflate)), "kernel_expectations")
    assert any("GEMV" in p.expected and "elements" in p.expected for p in failed)
    assert any(p.expected.startswith("i2s_gemv elements") for p in failed)  # and per kernel id


def test_expectations_follow_the_layer_count():
    result = verify(mutated(_set(("model", "n_layers"), 3)))
    assert "kernel_expectations" in gates(result)


def test_a_split_kernel_choice_must_split_the_counters_by_shape():
    """Counters split between families in any other proportion than the per-shape choice are caught."""

    def split(receipt):
        gemv = receipt["kernel_counts"]["i2s_gemv"]
        half = {k: v // 2 for k, v in gemv.items()}
        receipt["kernel_counts"]["tl1_gemv"] = {k: gemv[k] - half[k] for k in gemv}
        receipt["kernel_counts"]["i2s_gemv"] = half
        receipt["kernels"].append("tl1_gemv")
        receipt["kernel_choice"]["variants"]["tl1_gemv"] = "avx512bw"
        receipt["kernel_choice"]["per_shape"][0]["kernel"] = "tl1"

    result = verify(mutated(split))
    assert "kernel_expectations" in gates(result) and "kernel_choice" in gates(result)


def test_edited_summary_throughput_is_caught():
    def edit(receipt):
        receipt["phases"]["benchmark"]["summary"]["tokens_per_second"] *= 0.9

    assert "summary" in verify(mutated(edit)).gate("throughput").expected


def test_throughput_within_one_percent_passes():
    assert verify(mutated(lambda r: r.__setitem__("tokens_per_second", r["tokens_per_second"] * 1.005))).ok


def test_throughput_needs_raw_samples():
    result = verify(mutated(lambda r: r["phases"].pop("benchmark")))
    assert "throughput" in gates(result)


@pytest.mark.parametrize("phase", ["probe", "timing"])
def test_a_phase_receipt_verifies_and_says_what_does_not_apply(phase):
    result = verify(make_phase_receipt(phase))
    assert result.ok, result.lines()
    not_applicable = {g.name for g in result.not_checked if g.reason.startswith("not applicable")}
    assert {"throughput", "tokens", "determinism", "replay", "bandwidth_floor"} <= not_applicable
    assert not_applicable <= result.unrequested  # what cannot apply leaves the verdict whole
    assert {"schema", "kernel_expectations", "kernel_variants", "ternary_kernel"} <= set(result.passed)
    assert result.verdict().startswith("VALID (self-consistent")


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
    failed = set(gates(verify(_phase_edit(phase, edit))))
    # a dropped probe sample also contradicts the probe's own summary of it
    assert "kernel_expectations" in failed and failed <= {"kernel_expectations", "probe"}


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
    assert any("future" in p.expected for p in problems(result, "timestamps"))
    result = verify(mutated(_set(("phases", "timing", "steps", 0, "layers"), [0.003, 0.003])))
    assert "summaries" in gates(result)


def test_tampered_digest_is_caught():
    receipt = make_receipt()
    receipt["tokens_per_second"] *= 2
    receipt["phases"]["benchmark"]["summary"]["tokens_per_second"] *= 2
    result = verify(receipt)
    assert "checksum" in gates(result)
    receipt = make_receipt()
    receipt["content_digest"] = "0" * 64
    result = verify(receipt)
    assert gates(result) == ["checksum"]
    assert "detects accidental edits, not tampering" in result.gate("checksum").reason


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


def _facts(**changes):
    section = {k: v for k, v in MODEL.items() if k != "path"} | changes
    return ModelFacts("m.gguf", section, changes.pop("weight_bytes_per_token", 40_000))


def test_model_binding_holds_every_fact_against_the_file():
    assert "model_binding" in verify(make_receipt(), Evidence(model=_facts())).passed
    for key, value in (
        ("n_layers", 1),
        ("sha256", "cd" * 32),
        ("tensors_per_format", {"i2s": 7}),
        ("vocab_size", 3),
    ):
        result = verify(make_receipt(), Evidence(model=_facts(**{key: value})))
        assert gates(result) == ["model_binding"], key
        assert f"model.{key}" in result.gate("model_binding").expected
    wrong_bytes = ModelFacts("m.gguf", _facts().section, 50_000)
    result = verify(make_receipt(), Evidence(model=wrong_bytes))
    assert "weight_bytes_per_token" in result.gate("model_binding").expected
    unknown = ModelFacts("m.gguf", _facts().section, None)
    assert "not compared" in verify(make_receipt(), Evidence(model=unknown)).gate("model_binding").reason


def _replayed(receipt, **changes):
    bench = receipt["phases"]["benchmark"]
    fields = {
        "benchmark": bench,
        "kernel_counts": receipt["kernel_counts"],
        "variants": receipt["kernel_choice"]["variants"],
        "threads": receipt["threads"],
        "cpu_model": receipt["host"]["cpu_model"],
        "cpu_flags": tuple(receipt["host"]["cpu_flags"]),
    }
    return ReplayRun(**{**fields, **changes})


def test_replay_compares_tokens_counters_and_variants():
    receipt = make_receipt()
    assert verify(receipt, Evidence(replay=_replayed(receipt))).level == "evidence"
    other_tokens = copy.deepcopy(receipt["phases"]["benchmark"])
    other_tokens["repetitions"][1]["output_sha256"] = "ef" * 32
    counts = copy.deepcopy(receipt["kernel_counts"])
    counts["rmsnorm"]["calls"] += 1
    for changes in (
        {"benchmark": other_tokens},
        {"kernel_counts": counts},
        {"variants": {**receipt["kernel_choice"]["variants"], "i2s_gemv": "portable"}},
        {"prompt_matches": False},
    ):
        assert gates(verify(receipt, Evidence(replay=_replayed(receipt, **changes)))) == ["replay"], changes


def test_replay_variants_are_compared_only_on_a_host_with_the_same_instruction_sets():
    receipt = make_receipt()
    elsewhere = _replayed(receipt, variants={"i2s_gemv": "portable"}, cpu_flags=("avx2",), threads=1)
    gate = verify(receipt, Evidence(replay=elsewhere)).gate("replay")
    assert (
        gate.status == "pass" and "variants not compared" in gate.reason and "replayed with 1" in gate.reason
    )


def test_remeasure_fails_a_claim_faster_than_this_host():
    receipt = make_receipt()
    slow = copy.deepcopy(receipt["phases"]["benchmark"])
    for rep in slow["repetitions"]:
        rep["decode_seconds"] = [s * 2.0 for s in rep["decode_seconds"]]
    result = verify(receipt, Evidence(replay=_replayed(receipt, benchmark=slow), remeasure=0.15))
    assert gates(result) == ["remeasure"] and "decode step" in result.gate("remeasure").expected
    assert verify(receipt, Evidence(replay=_replayed(receipt, benchmark=slow), remeasure=1.2)).ok
    other_cpu = verify(
        receipt, Evidence(replay=_replayed(receipt, benchmark=slow, cpu_model="X"), remeasure=0.1)
    )
    assert (
        other_cpu.gate("remeasure").status == "not_checked"
        and "not comparable" in other_cpu.gate("remeasure").reason
    )
    assert (
        "unsigned: speed not beyond this host's"
        in verify(receipt, Evidence(replay=_replayed(receipt), remeasure=0.15)).verdict()
    )


def test_remeasure_goes_on_through_a_slow_spell_and_fails_only_a_shortfall_that_lasts(monkeypatch):
    """A shared host slows down for seconds at a time: a genuine receipt re-measured inside such a spell
    must not fail, so rounds go on until the claim is reached; a forged speed is never reached."""
    receipt = make_receipt()
    claimed = receipt["phases"]["benchmark"]["repetitions"]

    def rounds(factors):
        it = iter(factors)

        def run_round():
            factor = next(it)
            reps = copy.deepcopy(claimed)
            for rep in reps:
                rep["decode_seconds"] = [s * factor for s in rep["decode_seconds"]]
                rep["prefill_seconds"] *= factor
            return {"repetitions": reps}

        return run_round

    reached = remeasure_rounds(rounds([1.5, 1.4, 1.0, 9.9]), claimed, 0.15)
    assert reached["rounds"] == 3 and len(reached["repetitions"]) == 3 * len(claimed)
    assert verify(receipt, Evidence(replay=_replayed(receipt, remeasured=reached), remeasure=0.15)).ok
    monkeypatch.setattr(evidence, "REMEASURE_BUDGET_SECONDS", 0.0)
    never = remeasure_rounds(rounds([2.0, 1.0]), claimed, 0.15)
    assert never["rounds"] == 1 and isinstance(never["busy"], list)
    never["busy"] = []  # what a quiet host reports
    gate = verify(receipt, Evidence(replay=_replayed(receipt, remeasured=never), remeasure=0.15)).gate(
        "remeasure"
    )
    assert gate.status == "fail" and "in 1 round over" in gate.expected
    busy = {**never, "busy": ["other processes used 80% of the 2 CPUs' time while the run measured"]}
    gate = verify(receipt, Evidence(replay=_replayed(receipt, remeasured=busy), remeasure=0.15)).gate(
        "remeasure"
    )
    assert gate.status == "not_checked" and "busy while re-measuring (other processes used 80%" in gate.reason


def test_evidence_not_asked_for_is_listed_but_not_a_gap_in_the_verdict():
    result = verify(make_receipt())
    assert {g.name for g in result.not_checked} >= {"model_binding", "replay", "remeasure", "signature"}
    assert "model_binding" not in result.verdict()
    assert (
        result.verdict()
        == "VALID (self-consistent; not checked: bandwidth_floor; unsigned: speed is self-reported)"
    )


def test_replay_is_not_checked_when_the_evidence_was_withheld():
    result = verify(make_receipt(), Evidence(withheld={"replay": "the receipt fails the schema"}))
    gate = result.gate("replay")
    assert gate.status == "not_checked" and "schema" in gate.reason and "replay" in result.verdict()


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
    assert "FAIL compute_path [self-consistent]" in result.output and "FAIL kernel_counts" in result.output
    assert "INVALID (failed: compute_path [self-consistent]," in result.output


def test_cli_json_output_parses(run, tmp_path):
    receipt = mutated(_set(("compute_path",), "mock"))
    result = run("verify-receipt", "--path", _save(tmp_path, receipt), "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False and data["level"] is None and data["verdict"].startswith("INVALID")
    failed = [g for g in data["gates"] if g["status"] == "fail"]
    assert [g["name"] for g in failed] == ["compute_path"]
    assert set(failed[0]) == {"name", "level", "status", "expected", "found", "reason"}
    assert failed[0]["level"] == "self-consistent"
    saved = _save(tmp_path, make_receipt(), "ok.json")
    ok = json.loads(run("verify-receipt", "--path", saved, "--json").stdout)
    assert ok["valid"] is True and ok["level"] == "self-consistent"
    assert {g["status"] for g in ok["gates"]} == {"pass", "not_checked"}


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


def test_cli_model_and_replay_refuse_unusable_evidence(run, tmp_path):
    saved = _save(tmp_path, make_receipt())
    not_gguf = tmp_path / "m.gguf"
    not_gguf.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    for args in (
        ("--model", tmp_path / "missing.gguf"),
        ("--model", not_gguf),
        ("--replay",),  # the recorded models/tiny.gguf is not here and no rebuild was asked for
        ("--rebuild-preset", "--model", tmp_path / "missing.gguf"),
        ("--remeasure",),
    ):
        result = run("verify-receipt", "--path", saved, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and "Traceback" not in result.output
    result = run("verify-receipt", "--path", saved, "--replay")
    assert "--rebuild-preset" in result.output and "give --model FILE" in result.output


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
    assert "VALID (self-consistent" in result.output
    for gate in ("throughput", "tokens", "determinism"):
        assert f"NOT CHECKED {gate} [self-consistent]: not applicable: a probe receipt" in result.output


def test_every_schema_error_is_reported_up_to_a_cap():
    receipt = make_receipt()
    receipt["phases"]["benchmark"]["repetitions"][0]["decode_seconds"] = ["x"] * 5
    assert len(problems(verify(receipt), "schema")) == 5
    receipt["phases"]["benchmark"]["repetitions"][0]["decode_seconds"] = ["x"] * 500
    schema_failures = problems(verify(receipt), "schema")
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


def _avx2_on_a_host_without_it(receipt):
    receipt["kernel_choice"]["variants"]["i2s_gemv"] = "avx2"
    receipt["host"]["cpu_flags"] = ["fma"]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_set(("kernel_choice", "variants", "tl1_gemv"), "avx512bw"), "variants only for kernels that ran"),
        (lambda r: r["kernel_choice"]["variants"].pop("i2s_gemv"), "a variant for every ternary"),
        (lambda r: r["kernel_choice"]["variants"].pop("logits_i8"), "a variant for every ternary"),
        (_set(("host", "cpu_flags"), ["avx512_vnni", "avx2"]), "avx512_vnni, avx512vl for i2s_gemm"),
        (_avx2_on_a_host_without_it, "avx2 for i2s_gemv"),
    ],
)
def test_kernel_variants_must_match_the_run_and_the_host(edit, expected):
    result = verify(mutated(edit))
    failed = problems(result, "kernel_variants")
    assert failed and any(expected in p.expected for p in failed), result.lines()


def test_kernel_variants_absent_are_not_checked_and_claims_need_the_flags():
    old = verify(mutated(lambda r: r["kernel_choice"].pop("variants")))
    assert old.ok and old.gate("kernel_variants").status == "not_checked"
    assert "not checked: kernel_variants" in old.verdict()
    bad = verify(mutated(_set(("kernel_choice", "variants", "i2s_gemv"), "avx1024")))
    assert "schema" in gates(bad)
    quiet = verify(mutated(_set(("host", "cpu_flags"), [])))
    assert "kernel_variants" in gates(quiet)  # an avx512vnni claim with no flags recorded
    portable = {"i2s_gemm": "portable", "i2s_gemv": "portable", "logits_i8": "portable"}
    assert verify(
        mutated(lambda r: (r["host"].update(cpu_flags=[]), r["kernel_choice"].update(variants=portable)))
    ).ok


@pytest.mark.parametrize(("kernel", "variant"), [("i2s_gemv", "avx512bw"), ("logits_i8", "avx512bw")])
def test_a_variant_must_exist_for_its_kernel(kernel, variant):
    result = verify(mutated(_set(("kernel_choice", "variants", kernel), variant)))
    assert any("path that exists for it" in p.expected for p in problems(result, "kernel_variants"))


def test_avx2_needs_the_avx2_flag():
    avx2 = {"i2s_gemm": "avx2", "i2s_gemv": "avx2", "logits_i8": "avx2"}
    assert verify(mutated(lambda r: r["kernel_choice"].update(variants=avx2))).ok
    no_flag = verify(
        mutated(lambda r: (r["kernel_choice"].update(variants=avx2), r["host"].update(cpu_flags=["fma"])))
    )
    assert any("avx2" in p.found for p in problems(no_flag, "kernel_variants"))


def _decode_steps(n):
    def edit(receipt):
        for rep in receipt["phases"]["benchmark"]["repetitions"]:
            rep["decode_seconds"] = [0.004 + 1e-5 * i for i in range(n)]

    return edit


def test_decode_steps_follow_the_stopping_rule():
    """4 tokens of 4 requested: 3 decode steps (the first token comes from the prefill); EOS would need 4."""
    for steps in (2, 4):
        assert "tokens" in gates(verify(mutated(_decode_steps(steps)))), steps
    with_context = mutated(_set(("model", "context_length"), 64))
    assert "tokens" not in gates(verify(with_context))


def test_wall_clock_must_hold_the_measured_time():
    result = verify(mutated(_set(("jit_seconds",), 1e300)))
    assert "timestamps" in gates(result) and "load + JIT + measured" in result.gate("timestamps").expected
    assert "timestamps" in gates(verify(mutated(lambda r: r.__setitem__("started_at", r["timestamp"]))))


def test_latencies_have_a_floor_and_ttft_includes_the_prefill():
    tiny = _set(("phases", "benchmark", "repetitions", 0, "decode_seconds", 1), 1e-300)
    assert "latencies" in gates(verify(mutated(tiny)))
    assert "latencies" in gates(
        verify(mutated(_set(("phases", "benchmark", "repetitions", 0, "prefill_seconds"), 0.0)))
    )


def test_pasted_constant_latencies_are_refused():
    def constant(receipt):
        for i, rep in enumerate(receipt["phases"]["benchmark"]["repetitions"]):
            rep["decode_seconds"] = [0.004, 0.004, 0.004]
            rep["prefill_seconds"] += 1e-4 * i

    assert "duplicate_samples" in gates(verify(mutated(constant)))


def _fast_benchmark(factor):
    def edit(receipt):
        for rep in receipt["phases"]["benchmark"]["repetitions"]:
            rep["decode_seconds"] = [s / factor for s in rep["decode_seconds"]]

    return edit


def test_a_benchmark_much_faster_than_the_timing_phase_fails_unless_noisy():
    """On the gate: receipts gain a `noise` section from a newer writer; the gate reads it when present."""
    from harness.receipts.checks import Check
    from harness.receipts.gates.measurements import timing_consistency

    def run(receipt):
        c = Check(receipt, Evidence())
        timing_consistency(c)
        return c

    assert not run(mutated(_fast_benchmark(1.2))).problems
    quiet = run(mutated(lambda r: (_fast_benchmark(3)(r), r.__setitem__("noise", {"noisy": False}))))
    assert quiet.problems and "faster than the timing phase" in quiet.problems[0].found
    noisy = run(mutated(lambda r: (_fast_benchmark(3)(r), r.__setitem__("noise", {"noisy": True}))))
    assert not noisy.problems and noisy.warnings
    result = verify(forge(make_receipt(), _fast_benchmark(3)))  # no noise record: a warning in the verdict
    assert result.ok and result.gate("timing_consistency").status == "warn"
    assert "noisy: speed unreliable" in result.verdict()


@pytest.mark.parametrize(("benchmark_step", "fails"), [(93e-6, False), (45e-6, True)])
def test_a_sub_millisecond_step_allows_for_the_timing_phases_own_costs(benchmark_step, fails):
    """A tiny model's honest run (a timing step of 158 us with its timers, benchmark steps of 93 us, a
    quiet machine) passes; benchmark steps edited to half of that still fail."""
    from harness.receipts.checks import Check
    from harness.receipts.gates.measurements import timing_consistency

    def tiny(receipt):
        receipt["noise"] = {"noisy": False}
        for step in receipt["phases"]["timing"]["steps"]:
            step.update(embed=6e-6, forward=118e-6, logits=34e-6)
        for rep in receipt["phases"]["benchmark"]["repetitions"]:
            rep["decode_seconds"] = [
                benchmark_step * (1 + 0.01 * i) for i in range(len(rep["decode_seconds"]))
            ]

    c = Check(mutated(tiny), Evidence())
    timing_consistency(c)
    assert bool(c.problems) == fails


def test_the_bandwidth_floor_binds_weights_larger_than_the_cache():
    def big_model(llc, tps_factor=1.0):
        def edit(receipt):
            receipt["host"]["llc_bytes"] = llc
            bw = receipt["bandwidth"]
            bw["read_gbps"] = bw["weight_bytes_per_token"] * receipt["tokens_per_second"] / 1e9 / tps_factor
            bw["decode_floor_tok_s"] = bw["read_gbps"] * 1e9 / bw["weight_bytes_per_token"]
            bw["ratio_to_floor"] = receipt["tokens_per_second"] / bw["decode_floor_tok_s"]

        return edit

    at_floor = verify(mutated(big_model(1000)))
    assert "bandwidth_floor" in at_floor.passed
    assert "bandwidth_floor" in gates(verify(mutated(big_model(1000, tps_factor=2.0))))
    fits = verify(mutated(big_model(1 << 25, tps_factor=2.0)))
    assert fits.ok and "fit in" in fits.gate("bandwidth_floor").reason


def test_weight_bytes_per_token_follow_from_the_shape():
    def shrink(receipt):
        bw = receipt["bandwidth"]
        bw["weight_bytes_per_token"] = 1000
        bw["decode_floor_tok_s"] = bw["read_gbps"] * 1e9 / 1000
        bw["ratio_to_floor"] = receipt["tokens_per_second"] / bw["decode_floor_tok_s"]

    assert "bandwidth" in gates(verify(mutated(shrink)))


def test_a_peer_needs_a_model_llama_cpp_runs():
    receipt = make_receipt()
    bench = copy.deepcopy(receipt["phases"]["benchmark"])
    peer = {
        "engine": "llama.cpp",
        "version": "0.3.16",
        "model_sha256": receipt["model"]["sha256"],
        "threads": 2,
    }
    peer |= {"settings": {}, "benchmark": bench, "decode_ratio": 1.0, "prefill_ratio": 1.0}
    result = verify(mutated(lambda r: r.__setitem__("peer", peer)))
    assert "bitnet model in tq2_0 or tq1_0" in result.gate("peer").expected


@pytest.mark.parametrize("one_scale", [True, False])
@pytest.mark.parametrize("fmt", ["i2s", "tq2_0", "tq1_0", "bitnet32", "qk256"])
def test_the_family_kernel_table_is_what_the_engine_prepares(fmt, one_scale):
    """harness.receipts.expectations.FAMILY_KERNELS / kernel_pairs against engine.kernels.prepare_matrix on
    a real matrix, its blocks under one scale or under two."""
    import numpy as np

    from engine.errors import EngineError
    from engine.formats import FORMATS
    from engine.kernels import KERNELS, prepare_matrix
    from harness.receipts.expectations import FAMILY_KERNELS, ONE_SCALE_KERNELS, kernel_pairs

    rows, cols = 8, 256
    values = np.random.default_rng(0).integers(-1, 2, (rows, cols)).astype(np.int8)
    if fmt == "qk256":
        values[values == 0] = 1
    scales = {"i2s": np.float32(0.5), "qk256": None}.get(fmt, np.full((rows, cols // 256), 0.5, np.float32))
    if fmt == "bitnet32":
        scales = np.full(rows * cols // 32, 0.5, np.float32)
    if not one_scale and scales is not None and scales.size > 1:
        scales.reshape(-1)[1] = 0.25
    raw = FORMATS[fmt].pack(values, scales)
    for family in KERNELS:
        try:
            matrix = prepare_matrix(fmt, raw, rows, cols, family, variant="portable")
        except EngineError:
            assert (family, fmt) not in FAMILY_KERNELS
            continue
        ran = (matrix.gemv_id, matrix.gemm_id)
        assert ran in kernel_pairs(family, fmt)
        repacked = family == "i2s" and fmt in ("tq2_0", "tq1_0") and one_scale
        assert ran == (ONE_SCALE_KERNELS if repacked else FAMILY_KERNELS[(family, fmt)])


def _with_probes(medians, buffer_bytes=1 << 30, noisy=None):
    """The factory receipt with probes of three passes around each median; read_gbps their median."""

    def edit(r):
        probes = [
            {
                "samples_gbps": [m * 0.99, m, m * 1.01],
                "median_gbps": m,
                "buffer_bytes": buffer_bytes,
                "threads": 1,
            }
            for m in medians
        ]
        pooled = sorted(s for p in probes for s in p["samples_gbps"])
        bw = r["bandwidth"]
        bw["read_gbps"] = pooled[len(pooled) // 2]
        bw["decode_floor_tok_s"] = bw["read_gbps"] * 1e9 / bw["weight_bytes_per_token"]
        bw["ratio_to_floor"] = r["tokens_per_second"] / bw["decode_floor_tok_s"]
        spread = max(medians) / min(medians) - 1
        bw |= {"probes": probes, "noisy": spread > 0.1 if noisy is None else noisy}

    return mutated(edit)


def test_the_floor_is_held_to_its_probes():
    assert "bandwidth" not in gates(verify(_with_probes([10.0, 10.2])))
    # a small buffer measures the cache; a disagreement of 30 % cannot be recorded as quiet
    assert "bandwidth" in gates(verify(_with_probes([10.0, 10.2], buffer_bytes=256 << 20)))
    assert "bandwidth" in gates(verify(_with_probes([10.0, 14.3], noisy=False)))
    raised = _with_probes([10.0, 10.2])
    raised["bandwidth"]["read_gbps"] *= 1.5  # the larger probe's best pass would flatter the ratio
    assert "bandwidth" in gates(verify(finalize(raised)))
