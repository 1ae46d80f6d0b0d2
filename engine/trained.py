"""The `trained` preset: real weights, trained once on Python's documentation and committed in engine/data.

Random-weight models are chaotic (a few ulp of float noise flip greedy tokens), so comparing two
implementations needs a trained model with peaked logits. scripts/train_fixture.py trains the preset's shape
with quantization-aware training and writes two I2_S files here (`trained-bitnet-b1.58.gguf`, squared-ReLU,
and its SiLU twin `trained-bitnet.gguf`, which upstream llama.cpp runs): the ternary values and per-tensor
scales once, about 1.8 MB each. Every other weight format is exported from them at first use into the model
cache, deterministically, like the synthetic presets: the ternary values are identical in every format; block
formats store the tensor scale as each block's fp16 scale (relative change at most 2^-11).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from engine.constants import ARCH_BITNET, ARCH_BITNET_B158, ARCHITECTURES, FORMAT_I2S
from engine.errors import EngineError
from engine.loader import ModelFile, load_file
from engine.model_io import (
    ProgressFn,
    Weights,
    architecture_metadata,
    check_ternary_format,
    read_weights,
    write_model,
)
from engine.presets import get_preset
from engine.tokenizer_data import tokenizer_metadata

TRAINED_PRESET = "trained"
# Bump when the committed weights or the exported bytes change, so cached exports are rebuilt.
TRAINED_VERSION = 1
TRAINING_KEY = "bitnet_harness.training."
SOURCE_FORMAT = FORMAT_I2S
TRAIN_FRACTION = 0.95  # of the corpus's tokens, in order; the rest is held out


def training_corpus() -> str:
    """The text the preset learned: pydoc_data.topics (Python's reference documentation, part of every
    Python install) in sorted topic order, separated by blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def source_path(arch: str) -> Path:
    """The committed I2_S file of the trained model in architecture `arch`."""
    if arch not in ARCHITECTURES:
        raise EngineError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    name = {ARCH_BITNET_B158: "trained-bitnet-b1.58.gguf", ARCH_BITNET: "trained-bitnet.gguf"}[arch]
    return Path(str(resources.files("engine") / "data" / name))


def model_metadata(arch: str, fmt: str, training: dict[str, object]) -> dict[str, object]:
    """The official keys, the project's tokenizer, the preset's name and the training's provenance."""
    p = get_preset(TRAINED_PRESET)
    meta = architecture_metadata(arch, p, fmt, f"bitnet-harness trained {arch} {fmt}")
    meta.update(
        {
            "bitnet_harness.preset": TRAINED_PRESET,
            "bitnet_harness.format": fmt,
            "bitnet_harness.seed": 0,
            "bitnet_harness.trained_version": TRAINED_VERSION,
        }
    )
    meta.update({TRAINING_KEY + key: value for key, value in training.items()})
    meta.update(tokenizer_metadata(p.vocab_size))
    return meta


def write_source(out: Path, arch: str, weights: Weights, training: dict[str, object]) -> Path:
    """Write freshly trained weights as the committed I2_S file (used by scripts/train_fixture.py)."""
    meta = model_metadata(arch, SOURCE_FORMAT, training)
    return write_model(out, meta, weights, get_preset(TRAINED_PRESET).n_layers, SOURCE_FORMAT)


def training_keys(model: ModelFile) -> dict[str, object]:
    """The `bitnet_harness.training.*` provenance keys of a trained model file, without the prefix."""
    meta = model.gguf.metadata
    return {key.removeprefix(TRAINING_KEY): v for key, v in meta.items() if key.startswith(TRAINING_KEY)}


def export_trained(fmt: str, arch: str, out: Path, progress: ProgressFn | None = None) -> Path:
    """Write the trained model of architecture `arch` in weight format `fmt` to `out` (atomically)."""
    check_ternary_format(fmt)
    source = source_path(arch)
    if not source.is_file():
        raise EngineError(f"the trained model {source} is missing; run scripts/train_fixture.py")
    model = load_file(source, strict=True)
    meta = model_metadata(arch, fmt, training_keys(model))
    return write_model(out, meta, read_weights(model), model.config.n_layers, fmt, progress)
