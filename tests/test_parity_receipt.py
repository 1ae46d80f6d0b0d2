"""Parity results in receipts: the section built from a parity report, validated by the schema, its summary
recomputed by verify-receipt from the per-position figures, and shown by `report`.

The report here is assembled from real comparisons (`harness.peers.measures`) of two logit arrays, so the
test needs neither llama.cpp nor transformers.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from harness.errors import HarnessError
from harness.peers.measures import compare_logits, reference_margins
from harness.peers.parity import receipt_section
from harness.receipts.digest import finalize
from harness.receipts.schema import schema_errors
from harness.receipts.verify import verify
from harness.reporting.receipt import render
from tests.receipt_factory import make_receipt


def parity_report() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((16, 50))
    token = ref + rng.normal(0, 1e-3, ref.shape)
    block = ref + rng.normal(0, 0.3, ref.shape)
    greedy = [{"prompt": "p", "ids": [1], "tokens": [3, 4], "margins": [0.5, 2.0]}]

    def run(mode: str, logits: np.ndarray, divergence: int | None) -> dict[str, Any]:
        return {
            "engine": {"act_quant": mode, "logits": "f32"},
            "logits": compare_logits(logits, ref),
            "greedy": {
                "steps": 2,
                "runs": [{"match": divergence is None, "first_divergence": divergence}] * 4,
            },
        }

    return {
        "reference": "transformers 5.24.0 (torch 2.13.0+cpu)",
        "reference_kind": "transformers",
        "tokenizer": {"strings": 18, "ids_identical": 18, "detokenized_identical": 17},
        "reference_margins": reference_margins(ref, greedy),
        "runs": [run("block256", block, 1), run("token", token, None)],
    }


def receipt_with_parity() -> dict[str, Any]:
    receipt = make_receipt()
    receipt["parity"] = receipt_section(parity_report())
    return finalize(receipt)


def test_the_section_carries_the_token_run_and_validates() -> None:
    receipt = receipt_with_parity()
    section = receipt["parity"]
    assert schema_errors(receipt) == []
    assert section["engine_act_quant"] == "token" and section["reference_kind"] == "transformers"
    assert section["reference_version"] == "transformers 5.24.0 (torch 2.13.0+cpu)"
    assert len(section["positions"]) == section["tokens_compared"] == 16
    assert section["greedy"] == {"steps": 2, "prompts": 4, "matching": 4, "first_divergence": [None] * 4}
    assert section["tokenizer"]["detokenized_identical"] == 17
    assert section["median_top1_margin"] == pytest.approx(1.25)
    result = verify(receipt)
    assert "parity" in result.passed, result.lines()


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p.update(max_abs_logit_error=p["max_abs_logit_error"] / 2),
        lambda p: p.update(top1_agreement=0.5),
        lambda p: p.update(min_cosine=1.0),
        lambda p: p["positions"].pop(),
        lambda p: p["greedy"].update(matching=3),
        lambda p: p["greedy"]["first_divergence"].__setitem__(0, 7),
        lambda p: p["tokenizer"].update(ids_identical=19),
    ],
)
def test_verify_recomputes_the_summary_and_catches_edits(edit: Any) -> None:
    receipt = receipt_with_parity()
    edit(receipt["parity"])
    result = verify(finalize(receipt))
    assert result.gate("parity").status == "fail", result.lines()


def test_sections_without_positions_are_not_claimed_as_checked() -> None:
    receipt = make_receipt()
    receipt["parity"] = {
        "reference": "numpy",
        "tokens_compared": 8,
        "max_abs_logit_error": 0.1,
        "top1_agreement": 1.0,
    }
    result = verify(finalize(receipt))
    gate = result.gate("parity")
    assert gate.status == "not_checked" and "per-position" in gate.reason and result.ok


def test_report_shows_the_summary_not_every_position() -> None:
    out = io.StringIO()
    render(receipt_with_parity(), Console(file=out, width=200))
    text = out.getvalue()
    assert "transformers 5.24.0" in text and "min cosine" in text and "4/4 prompts equal over 2 steps" in text
    assert "18/18 ids, 17/18 detokenized" in text and "cosine': " not in text


def test_a_report_without_the_requested_run_is_refused() -> None:
    with pytest.raises(HarnessError, match="no 'token' run"):
        receipt_section({**parity_report(), "runs": []})
