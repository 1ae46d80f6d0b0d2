"""transformers' BitNetForCausalLM as the reference: the model built from a GGUF file, parity on the trained
model, and Hugging Face folders written by transformers' own save_pretrained converted and compared.

Skipped with the reason (pytest -ra) when the `reference` extra (torch CPU + transformers) is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.constants import ARCH_BITNET, ARCH_BITNET_B158, FORMAT_I2S, FORMAT_TQ2_0
from engine.hf_checkpoint import absmean_ternary, convert_checkpoint
from engine.loader import load_file
from engine.model_io import read_weights
from engine.synth import ensure_preset_model
from harness.errors import HarnessError
from harness.peers.parity import run_parity
from harness.peers.transformers_ref import TransformersImpl, build_model, fast_tokenizer, transformers_missing

MISSING = transformers_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"transformers reference skipped: {MISSING}")


def trained(fmt: str = FORMAT_I2S, arch: str = ARCH_BITNET_B158) -> Path:
    return ensure_preset_model("trained", fmt, arch, 0)


def transformers_parity(model: Path, **options: object) -> dict:
    return run_parity(model, reference="transformers", kernel="i2s", **options)


def summary(report: dict) -> dict[str, object]:
    """The figures the issue judges, per engine mode."""
    return {
        run["engine"]["act_quant"]: (
            run["logits"]["min_cosine"],
            [g["first_divergence"] for g in run["greedy"]["runs"]],
        )
        for run in report["runs"]
    }


def test_bitlinear_layers_hold_the_files_ternary_values_and_inverted_scales() -> None:
    import torch
    from transformers.integrations.bitnet import BitLinear, unpack_weights

    model_file = load_file(trained())
    meta = model_file.gguf.metadata
    model = build_model(model_file, meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"])
    layer = model.model.layers[1].mlp.down_proj
    assert isinstance(layer, BitLinear)
    values, scale = read_weights(model_file)["blk.1.ffn_down.weight"].load()
    assert torch.equal(
        unpack_weights(layer.weight, dtype=torch.float32).to(torch.int8), torch.from_numpy(values)
    )
    assert float(layer.weight_scale) == pytest.approx(1.0 / scale, rel=1e-7)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.config.hidden_act == "relu2"


@pytest.mark.slow
def test_trained_model_matches_transformers_in_token_mode() -> None:
    report = transformers_parity(trained(), act_quants=("token",))
    run = report["runs"][0]
    assert report["tokenizer"]["agreement"] == 1.0, report["tokenizer"]["mismatches"][:2]
    assert run["logits"]["min_cosine"] >= 0.999, summary(report)
    assert len(run["greedy"]["runs"]) >= 4 and run["greedy"]["all_match"], summary(report)
    assert report["passed"]
    # Greedy parity means something only when no step is a near tie: the smallest margin of the reference's
    # greedy steps stands far above the largest logit difference between the two.
    margins = report["reference_margins"]
    assert margins["median_top1_margin_greedy"] > 0.3, margins
    assert margins["min_top1_margin_greedy"] > 50 * run["logits"]["max_abs_logit_error"], margins
    assert len(report["reference_checks"]) == 2
    for check in report["reference_checks"]:
        assert check["logits"]["min_cosine"] > 0.9999 and check["greedy_matching"] == 4, check


@pytest.mark.slow
def test_silu_twin_matches_transformers_in_both_engine_modes() -> None:
    report = transformers_parity(trained(FORMAT_TQ2_0, ARCH_BITNET), greedy_steps=8)
    modes = {run["engine"]["act_quant"]: run for run in report["runs"]}
    assert set(modes) == {"token", "block256"}
    assert modes["token"]["passed"], summary(report)
    # block256 quantizes activations per 256 values, not per token: reported, judged only loosely.
    assert modes["block256"]["logits"]["min_cosine"] > 0.99, summary(report)


def test_what_transformers_cannot_hold_is_refused() -> None:
    with pytest.raises(HarnessError, match="distinct block scales"):
        transformers_parity(ensure_preset_model("tiny", FORMAT_TQ2_0, ARCH_BITNET, 0), greedy_steps=1)
    with pytest.raises(HarnessError, match="neither a file nor a Hugging Face folder"):
        transformers_parity(Path("/nonexistent/model.gguf"))


def test_fast_tokenizer_agrees_on_the_corpus_with_special_text_kept_plain() -> None:
    meta = load_file(trained()).gguf.metadata
    tok = fast_tokenizer(meta)
    ids = tok.encode("<|begin_of_text|> is plain text here", add_special_tokens=False)
    assert meta["tokenizer.ggml.bos_token_id"] not in ids
    assert tok.decode(ids, skip_special_tokens=True) == "<|begin_of_text|> is plain text here"


def save_folder(path: Path, gguf: Path) -> Path:
    """A Hugging Face folder written by transformers' own save_pretrained from the model built from `gguf`."""
    reference = TransformersImpl.from_gguf(load_file(gguf), threads=None)
    reference.model.save_pretrained(path)
    reference.tokenizer.save_pretrained(path)
    return path


@pytest.mark.slow
def test_save_pretrained_folder_round_trips_through_convert(tmp_path: Path) -> None:
    folder = save_folder(tmp_path / "trained-hf", trained())
    config = json.loads((folder / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "bitnet"
    out = convert_checkpoint(folder, tmp_path / "converted.gguf")
    original, converted = read_weights(load_file(trained())), read_weights(load_file(out))
    for name, weight in original.items():
        a, b = weight.load(), converted[name].load()
        if isinstance(a, tuple):
            assert np.array_equal(a[0], b[0]), name
            assert b[1] == pytest.approx(a[1], rel=2e-7), name  # 1 / (1 / scale) in float32
        else:
            assert np.array_equal(a, b), name
    # transformers loads the folder itself (from_pretrained); the engine runs the conversion in the cache.
    report = transformers_parity(folder, act_quants=("token",))
    assert report["model"]["converted"] and report["passed"], summary(report)


@pytest.mark.slow
def test_bf16_master_weights_folder_converts_like_bitnet_cpp(tmp_path: Path) -> None:
    """The -bf16 layout: BF16 master weights, quantized at conversion as AutoBitLinear does online."""
    import torch
    from safetensors.numpy import load_file as load_numpy
    from safetensors.torch import save_file

    folder = save_folder(tmp_path / "packed", trained())
    config = json.loads((folder / "config.json").read_text())
    config.pop("quantization_config")
    rng = np.random.default_rng(0)
    state = {}
    for name, array in load_numpy(str(folder / "model.safetensors")).items():
        if name.endswith("weight_scale"):
            continue
        if array.dtype == np.uint8:
            array = rng.standard_normal((array.shape[0] * 4, array.shape[1])).astype(np.float32) * 0.02
        state[name] = torch.from_numpy(np.ascontiguousarray(array)).to(torch.bfloat16)
    master = tmp_path / "master"
    master.mkdir()
    save_file(state, str(master / "model.safetensors"))
    (master / "config.json").write_text(json.dumps(config))
    (master / "tokenizer.json").write_text((folder / "tokenizer.json").read_text())
    model = load_file(convert_checkpoint(master, tmp_path / "m.gguf"))
    values, scale = read_weights(model)["blk.0.attn_v.weight"].load()
    want = state["model.layers.0.self_attn.v_proj.weight"].float().numpy()
    want_values, want_scale = absmean_ternary(want)
    assert np.array_equal(values, want_values) and scale == np.float32(want_scale)


@pytest.mark.slow
def test_parity_command_writes_a_receipt_that_verifies(tmp_path: Path) -> None:
    """benchmark on the trained preset, then `parity --reference transformers --receipt`: the copy carries
    the comparison, verify-receipt recomputes its summary and report shows it."""
    from harness.cli import app
    from tests.archive_factory import invoke

    bench = [
        "benchmark",
        "--preset",
        "trained",
        "--tokens",
        "4",
        "--prompt-tokens",
        "4",
        "--repetitions",
        "1",
    ]
    args = [*bench, "--no-probe", "--no-timing", "--no-bandwidth", "--receipts-dir", tmp_path]
    assert invoke(app, args).code == 0
    receipt = next(tmp_path.glob("*.json"))
    parity = ["parity", "--reference", "transformers", "--act-quant", "token", "--steps", "4"]
    outcome = invoke(app, [*parity, "--kernel", "i2s", "--receipt", receipt])
    assert outcome.code == 0, outcome.stdout + outcome.stderr
    assert "PASS: token mode" in outcome.stdout and "median" in outcome.stdout
    copy = receipt.with_name(receipt.name.removesuffix(".json") + ".parity.json")
    section = json.loads(copy.read_text())["parity"]
    assert section["reference_kind"] == "transformers" and section["greedy"]["matching"] == 4
    verified = invoke(app, ["verify-receipt", "--path", copy])
    assert verified.code == 0, verified.stdout
    shown = invoke(app, ["report", copy])
    assert "min cosine" in shown.stdout and "4/4 prompts equal over 4 steps" in shown.stdout
