"""`benchmark --vs-llama-cpp`: the receipt's `peer` section, its verification gate, and the command.

The llama.cpp runs are skipped with the reason printed (pytest -ra) when `llama_cpp` is not importable.
"""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.peers.llama_cpp import llama_cpp_missing
from harness.phases.benchmark import summarize
from harness.receipts.digest import finalize
from harness.receipts.summary import peer_ratios
from harness.receipts.verify import verify
from tests.receipt_factory import raw_receipt

MISSING = llama_cpp_missing()
needs_llama = pytest.mark.skipif(MISSING is not None, reason=f"llama.cpp runs skipped: {MISSING}")

PEER_ROWS = [
    {
        "prefill_seconds": 0.020 + 0.002 * i,
        "ttft_seconds": 0.021 + 0.002 * i,
        "decode_seconds": [0.008, 0.010, 0.012],
        "tokens_generated": 4,
        "output_sha256": "cd" * 32,
    }
    for i in range(3)
]


def _bitnet_tq2_0(receipt: dict[str, Any]) -> dict[str, Any]:
    """The factory receipt as a `bitnet` (SiLU) TQ2_0 model's: the only files llama.cpp runs."""
    receipt["model"].update(architecture="bitnet", format="tq2_0")
    per_format = receipt["model"]["tensors_per_format"]
    per_format["tq2_0"] = per_format.pop("i2s")
    renames = {"i2s_gemv": "i2s_blk_gemv", "i2s_gemm": "i2s_blk_gemm", "relu2_gate": "silu_gate"}
    for table in (receipt["kernel_counts"], receipt["kernel_choice"]["variants"]):
        for old, new in renames.items():
            if old in table:
                table[new] = table.pop(old)
    receipt["kernels"] = sorted(receipt["kernel_counts"])
    probe = receipt["phases"]["probe"]
    for row in (*probe["tensors"], *probe["candidates"]):
        if row.get("flavor") == "i2s":
            row.update(flavor="tq2_0", format="TQ2_0")
        if row["kernel"] == "i2s_gemv":
            row["kernel"] = "i2s_blk_gemv"
    return receipt


def _with_peer(**changes: Any) -> dict[str, Any]:
    receipt = _bitnet_tq2_0(raw_receipt())
    section = {
        "engine": "llama.cpp",
        "version": "llama-cpp-python 0.3.16",
        "model_sha256": receipt["model"]["sha256"],
        "threads": receipt["threads"],
        "settings": {"kv_cache": "f16", "n_batch": 512, "flash_attn": False, "n_ctx": 256},
        "benchmark": summarize(copy.deepcopy(PEER_ROWS), 1),
        **peer_ratios(receipt["phases"]["benchmark"]["repetitions"], PEER_ROWS),
    }
    section.update(changes)
    receipt["peer"] = section
    return finalize(receipt)


def test_ratios_come_from_the_raw_rows() -> None:
    engine = [
        {"prefill_seconds": 0.010, "decode_seconds": [0.004, 0.006]},
        {"prefill_seconds": 0.030, "decode_seconds": [0.005, 0.005]},
    ]
    peer = [
        {"prefill_seconds": 0.040, "decode_seconds": [0.010, 0.010]},
        {"prefill_seconds": 0.020, "decode_seconds": [0.010, 0.010]},
    ]
    got = peer_ratios(engine, peer)
    assert got["decode_ratio"] == pytest.approx((4 / 0.020) / (4 / 0.040))  # 2.0
    assert got["prefill_ratio"] == pytest.approx(0.030 / 0.020)  # medians 0.030 (peer) and 0.020 (engine)


def test_a_consistent_peer_section_verifies() -> None:
    result = verify(_with_peer())
    assert result.ok, result.lines()
    assert "peer" in result.passed
    on_i2s = raw_receipt()
    on_i2s["peer"] = _with_peer()["peer"]
    assert "llama.cpp runs" in verify(finalize(on_i2s)).gate("peer").expected


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"decode_ratio": 3.0}, "peer.decode_ratio"),
        ({"prefill_ratio": 0.1}, "peer.prefill_ratio"),
        ({"model_sha256": "ef" * 32}, "peer.model_sha256"),
        ({"threads": 7}, "peer.threads"),
    ],
)
def test_a_peer_section_that_does_not_add_up_fails(changes: dict[str, Any], expected: str) -> None:
    result = verify(_with_peer(**changes))
    failed = [p for g in result.failures if g.name == "peer" for p in g.problems]
    assert failed and any(expected in p.expected for p in failed)


def test_edited_peer_throughput_fails() -> None:
    receipt = _with_peer()
    receipt["peer"]["benchmark"]["summary"]["tokens_per_second"] *= 2
    result = verify(finalize(receipt))
    assert any(g.name == "peer" for g in result.failures)


def test_peer_section_is_schema_checked() -> None:
    receipt = _with_peer()
    receipt["peer"]["surprise"] = 1
    result = verify(finalize(receipt))
    assert any(g.name == "schema" for g in result.failures)


def test_vs_llama_cpp_needs_greedy_decoding() -> None:
    result = CliRunner().invoke(
        app, ["benchmark", "--preset", "tiny", "--vs-llama-cpp", "--temperature", "0.7"]
    )
    assert isinstance(result.exception, HarnessError)  # harness.cli.main: one line, exit 2
    assert "greedy" in str(result.exception)


def test_vs_llama_cpp_is_not_an_ab_run() -> None:
    result = CliRunner().invoke(
        app, ["benchmark", "--preset", "tiny", "--vs-llama-cpp", "--ab-kernel", "i2s,tl1"]
    )
    assert isinstance(result.exception, HarnessError)
    assert "separate modes" in str(result.exception)


@needs_llama
def test_vs_llama_cpp_refuses_the_squared_relu_architecture(tmp_path: Path) -> None:
    args = ["benchmark", "--preset", "tiny", "--arch", "bitnet-b1.58", "--vs-llama-cpp"]
    result = CliRunner().invoke(app, [*args, "--receipts-dir", str(tmp_path)])
    assert isinstance(result.exception, HarnessError)
    assert "'bitnet'-architecture" in str(result.exception)


@needs_llama
def test_vs_llama_cpp_on_tiny_writes_a_verified_peer_section(tmp_path: Path) -> None:
    args = ["benchmark", "--preset", "tiny", "--vs-llama-cpp", "--tokens", "8", "--prompt-tokens", "8"]
    args += ["--repetitions", "2", "--no-probe", "--no-timing", "--no-bandwidth", "--json"]
    result = CliRunner().invoke(app, [*args, "--receipts-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{") :])
    receipt, peer = out["receipt"], out["receipt"]["peer"]
    gates = {g["name"]: g["status"] for g in out["verification"]["gates"]}
    assert out["verification"]["valid"] and gates["peer"] == "pass"
    assert peer["engine"] == "llama.cpp" and peer["model_sha256"] == receipt["model"]["sha256"]
    assert receipt["model"]["architecture"] == "bitnet" and receipt["model"]["format"] == "tq2_0"
    assert len(peer["benchmark"]["repetitions"]) == 2
    assert all(r["tokens_generated"] == 8 for r in peer["benchmark"]["repetitions"])
    assert peer["decode_ratio"] > 0 and peer["prefill_ratio"] > 0
