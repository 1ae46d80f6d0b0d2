"""The compiled decode block (engine/kernels/decode_block.py) against the same kernels called step by step."""

from pathlib import Path

import numpy as np
import pytest

from engine.constants import LAYER_MATRICES, GGMLType
from engine.errors import EngineError
from engine.gguf_reader import read_gguf
from engine.gguf_writer import TensorSpec, Typed, write_gguf
from engine.kernels import cpu
from engine.model import load_model
from engine.synth import ensure_preset_model

PROMPT = [1, 17, 300, 42, 999, 5]
VARIANTS = [
    "portable",
    pytest.param("avx2", marks=pytest.mark.skipif(not cpu.has_avx2(), reason="host has no AVX2")),
    pytest.param(
        "avx512vnni", marks=pytest.mark.skipif(not cpu.has_vnni(), reason="host has no AVX-512 VNNI")
    ),
]
OUTPUT_SCALES = {name: 0.5 + 0.125 * j for j, name in enumerate(LAYER_MATRICES)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def with_output_scales(src: Path, dst: Path) -> Path:
    """A copy of the tiny `bitnet` model `src` with a `.scale` tensor after every matrix (OUTPUT_SCALES)."""
    gguf = read_gguf(src)
    metadata = {
        k: v if isinstance(v, list) else Typed(gguf.metadata_types[k], v)
        for k, v in gguf.metadata.items()
        if k != "general.alignment"
    }
    specs = []
    for t in gguf.tensors.values():
        specs.append(TensorSpec(t.name, t.ggml_type, t.shape, t.nbytes, lambda t=t: np.asarray(t.data)))
        part = t.name.split(".")[2] if t.name.startswith("blk.") else ""
        if part in OUTPUT_SCALES and t.name.endswith(".weight"):
            value = np.array([OUTPUT_SCALES[part]], np.float32)
            name = t.name.removesuffix(".weight") + ".scale"
            specs.append(TensorSpec(name, int(GGMLType.F32), (1,), 4, lambda v=value: v.view(np.uint8)))
    write_gguf(dst, metadata, specs, alignment=gguf.alignment)
    return dst


def decode_both_ways(model, tokens: list[int]) -> tuple[list[np.ndarray], ...]:
    """Logits and trace counts of `tokens` decoded after PROMPT, first by the block, then step by step."""
    out = []
    for block in (True, False):
        model.set_decode_block(block)
        model.reset()
        model.prefill(PROMPT)
        before = model.trace.counts.copy()
        logits = [model.decode(t).copy() for t in tokens]
        out.append((logits, model.trace.counts - before))
    model.set_decode_block(True)
    return out[0], out[1]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ["bitnet-b1.58", "bitnet", "bitnet with output scales"])
def test_block_gives_the_bits_and_counts_of_the_steps(model_dir, monkeypatch, variant, arch) -> None:
    """Same logits to the bit and the same kernel calls counted, for relu2 (b1.58) and silu (bitnet) FFNs,
    output scales that divide the activation scale, and every GEMV variant the host can run."""
    path = ensure_preset_model("tiny", "i2s", arch.split()[0], cache_dir=model_dir)
    if arch.endswith("output scales"):
        path = with_output_scales(path, model_dir / "tiny-i2s-bitnet-scales.gguf")
    monkeypatch.setattr(cpu, "_i2s_path", lambda prefer: variant)
    model = load_model(path, kernel="i2s")
    assert model.decode_block == variant
    scales = {p.scale for layer in model._layers for p in layer.projections().values()}
    assert scales == (set(OUTPUT_SCALES.values()) if arch.endswith("output scales") else {1.0})
    (block, block_counts), (steps, step_counts) = decode_both_ways(model, [3, 1000, 7, 7, 250])
    for a, b in zip(block, steps, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(block_counts, step_counts)
    assert block_counts.any()


def test_block_runs_unless_every_matrix_is_one_scale_i2s(model_dir) -> None:
    """TQ2_0 block scales, TL1 tables and per-256 activation scales keep decode step by step; asking for
    the block there is a one-line error."""
    i2s = ensure_preset_model("tiny", "i2s", "bitnet", cache_dir=model_dir)
    tq2 = ensure_preset_model("tiny", "tq2_0", "bitnet", cache_dir=model_dir)
    assert load_model(i2s).decode_block is not None
    for model in (load_model(tq2), load_model(i2s, kernel="tl1"), load_model(i2s, act_quant="block256")):
        assert model.decode_block is None
        with pytest.raises(EngineError, match="no decode block"):
            model.set_decode_block(True)


def test_profiled_decode_times_the_block_per_layer(model_dir) -> None:
    """The timing phase's profile wraps each block call; by kernel, the layers run step by step."""
    model = load_model(ensure_preset_model("tiny", "i2s", "bitnet-b1.58", cache_dir=model_dir))
    assert model.decode_block is not None
    model.prefill(PROMPT)
    profile: dict = {}
    model.decode(3, profile)
    assert len(profile["layers"]) == model.config.n_layers and "kernels" not in profile
    by_kernel: dict = {}
    model.decode(4, by_kernel, by_kernel=True)
    assert set(by_kernel["kernels"]) >= {"attn_q", "ffn_down", "attention_gqa"}
