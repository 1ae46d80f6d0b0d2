"""The trace is exact: for P prompt tokens and G decode steps it equals `expected_counts` to the unit."""

from pathlib import Path

import pytest

from engine.model import load_model
from engine.synth import ensure_preset_model
from tests.trace_prediction import expected_counts


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("trace-models")


def _ids(model) -> dict[str, tuple[str, str]]:
    return model.matrix_kernel_ids()


@pytest.mark.parametrize(
    ("fmt", "arch", "kernel", "logits"),
    [
        ("i2s", "bitnet-b1.58", "i2s", "int8"),
        ("tq2_0", "bitnet", "tl1", "int8"),
        ("bitnet32", "bitnet-b1.58", "tl2", "f32"),
        ("qk256", "bitnet", "i2s", "int8"),
        ("tq1_0", "bitnet-b1.58", "i2s", "f32"),
    ],
)
@pytest.mark.parametrize(("prompt", "steps"), [(7, 5), (1, 0), (12, 1)])
def test_counts_are_predicted_exactly(
    model_dir: Path, fmt: str, arch: str, kernel: str, logits: str, prompt: int, steps: int
) -> None:
    path = ensure_preset_model("tiny", fmt, arch, cache_dir=model_dir)
    model = load_model(path, kernel=kernel, logits=logits)
    model.warmup()
    model.prefill([(3 * i + 1) % model.config.vocab_size for i in range(prompt)])
    for i in range(steps):
        model.decode(i + 2)
    predicted = expected_counts(model.config, prompt, steps, _ids(model), logits=logits)
    assert model.trace.snapshot() == predicted


def test_prediction_scales_with_layers_and_tokens(model_dir: Path) -> None:
    """A worked example on the tiny shape, written out by hand for one decode step at position 4."""
    model = load_model(ensure_preset_model("tiny", cache_dir=model_dir), kernel="i2s")
    cfg = model.config
    one = expected_counts(cfg, 4, 1, _ids(model))
    two = expected_counts(cfg, 4, 2, _ids(model))
    delta = {k: {c: two[k][c] - one[k][c] for c in ("calls", "rows", "elements")} for k in two}
    layers, h, f = cfg.n_layers, cfg.hidden, cfg.ffn
    assert delta["i2s_gemv"]["calls"] == 7 * layers
    assert delta["i2s_gemm"] == {"calls": 0, "rows": 0, "elements": 0}
    norm_elements = layers * (3 * h + f) + h
    assert delta["rmsnorm"] == {"calls": 4 * layers + 1, "rows": 4 * layers + 1, "elements": norm_elements}
    assert delta["attention_gqa"]["elements"] == layers * 2 * cfg.n_heads * cfg.head_dim * 6  # 6th position
    assert delta["logits_i8"] == {"calls": 1, "rows": cfg.vocab_size, "elements": cfg.vocab_size * h}
