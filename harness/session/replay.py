"""Replay for `verify-receipt --replay`: re-run the recorded prompt and settings, return the output digest."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.generate import SamplingParams, generate
from engine.synth import ensure_preset_model
from harness.errors import HarnessError
from harness.phases.load import load_and_warm
from harness.phases.workload import prompt_ids
from harness.receipts.digest import token_digest


def replay_model_path(receipt: Mapping[str, Any], model_path: Path | None) -> Path:
    """The file to replay on: the one given, else the recorded path, else the preset rebuilt from its seed."""
    if model_path is not None and model_path.is_file():
        return model_path
    model = receipt["model"]
    if model.get("preset") is not None and model.get("preset_seed") is not None:
        return ensure_preset_model(
            model["preset"], model["format"], model["architecture"], model["preset_seed"]
        )
    raise HarnessError(
        f"model file {model_path} not found and the receipt names no preset to rebuild it from"
    )


def replay_digest(receipt: Mapping[str, Any], model_path: Path | None, strict: bool | None = None) -> str:
    """sha256 of the token ids that the recorded prompt and sampling settings generate on this model."""
    path = replay_model_path(receipt, model_path)
    model = load_and_warm(path, threads=receipt.get("threads"), strict=strict).model
    prompt = receipt["prompt"]
    text = prompt.get("text")
    if text is None:
        raise HarnessError("the receipt records no prompt text; replay needs it")
    ids = prompt_ids(model.tokenizer, text, prompt["token_count"])
    if token_digest(ids) != prompt["token_ids_sha256"]:
        raise HarnessError(
            "the recorded prompt text does not tokenize to the recorded prompt ids on this model"
        )
    sampling = receipt["sampling"]
    params = SamplingParams(sampling["temperature"], sampling["top_k"], sampling["top_p"], receipt["seed"])
    result = generate(model, ids, receipt["tokens_requested"], params)
    return token_digest(result.tokens)
