"""What a phase runs on: the model file (a user's or a cached preset) and the prompt's token ids."""

from dataclasses import dataclass
from pathlib import Path

from engine.hf_checkpoint import ensure_converted, is_checkpoint_folder
from engine.synth import default_cache_dir, ensure_preset_model
from engine.tokenizer import Tokenizer
from harness.errors import HarnessError

DEFAULT_PROMPT = (
    "The quick brown fox jumps over the lazy dog. Ternary weights take the values -1, 0 and +1, "
    "so a matrix multiply becomes additions and subtractions of int8 activations."
)


@dataclass(frozen=True)
class ModelSource:
    """A model file and, when the project's writer made it, the preset arguments that rebuild it."""

    path: Path
    preset: str | None = None
    fmt: str | None = None
    arch: str | None = None
    seed: int | None = None


def model_file(model: Path) -> Path:
    """A GGUF file as given, or a Hugging Face BitNet folder's conversion (written once into the cache)."""
    if is_checkpoint_folder(model):
        return ensure_converted(model, default_cache_dir())
    if not model.is_file():
        raise HarnessError(f"model {model} is neither a file nor a Hugging Face folder (with config.json)")
    return model


def resolve_model(model: Path | None, preset: str, fmt: str, arch: str, seed: int) -> ModelSource:
    """The user's file (or folder, converted) when given, else the preset written once into the cache."""
    if model is not None:
        return ModelSource(model_file(model))
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
