"""What a phase runs on: the model file (a user's or a cached preset), the prompt, the model's facts."""

import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.loader import ModelFile
from engine.synth import ensure_preset_model
from engine.tokenizer import Tokenizer
from harness.errors import HarnessError

DEFAULT_PRESET = "2b-4t"
DEFAULT_PROMPT = (
    "The quick brown fox jumps over the lazy dog. Ternary weights take the values -1, 0 and +1, "
    "so a matrix multiply becomes additions and subtractions of int8 activations."
)
_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class ModelSource:
    """A model file and, when the project's writer made it, the preset arguments that rebuild it."""

    path: Path
    preset: str | None = None
    fmt: str | None = None
    arch: str | None = None
    seed: int | None = None


def resolve_model(model: Path | None, preset: str, fmt: str, arch: str, seed: int) -> ModelSource:
    """The user's file when given, else the preset written once into the cache folder and reused."""
    if model is not None:
        if not model.is_file():
            raise HarnessError(f"model file {model} does not exist or is not a file")
        return ModelSource(model)
    return ModelSource(ensure_preset_model(preset, fmt, arch, seed), preset, fmt, arch, seed)


def prompt_ids(tokenizer: Tokenizer, text: str, n_tokens: int | None) -> list[int]:
    """BOS + the text's tokens, cycled or cut to exactly `n_tokens` when given (same inputs, same ids)."""
    body = tokenizer.encode(text, add_bos=False)
    if not body:
        raise HarnessError("the prompt encodes to no tokens; give a non-empty --prompt")
    ids = [tokenizer.bos_id, *body]
    if n_tokens is None:
        return ids
    if n_tokens < 1:
        raise HarnessError(f"--prompt-tokens must be >= 1 (got {n_tokens})")
    while len(ids) < n_tokens:
        ids.extend(body)
    return ids[:n_tokens]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def preset_facts(mf: ModelFile) -> tuple[str | None, int | None]:
    """Preset name and seed recorded by the project's writer, or (None, None) for any other file."""
    meta = mf.gguf.metadata
    preset, seed = meta.get("bitnet_harness.preset"), meta.get("bitnet_harness.seed")
    if isinstance(preset, str) and isinstance(seed, int):
        return preset, seed
    return None, None


def model_facts(mf: ModelFile, path_label: str) -> dict[str, Any]:
    """The receipt's `model` section: identity (sha256, size), architecture and shape facts."""
    cfg = mf.config
    preset, seed = preset_facts(mf)
    per_format = Counter(check.flavor for check in mf.checks)
    return {
        "path": path_label,
        "sha256": file_sha256(Path(mf.path)),
        "size_bytes": Path(mf.path).stat().st_size,
        "architecture": cfg.arch,
        "preset": preset,
        "preset_seed": seed,
        "format": cfg.weight_format,
        "n_layers": cfg.n_layers,
        "hidden": cfg.hidden,
        "ffn": cfg.ffn,
        "n_heads": cfg.n_heads,
        "n_kv_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "tensors_per_format": dict(sorted(per_format.items())),
    }
