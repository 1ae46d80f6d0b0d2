"""Byte-level BPE vocabularies between GGUF metadata and Hugging Face's tokenizer.json.

A GGUF file keeps its vocabulary as `tokenizer.ggml.*` arrays; a Hugging Face folder keeps it as a
tokenizer.json document. Both directions use the LLaMA-3 configuration that the official BitNet b1.58 2B-4T
tokenizer.json has: the LLaMA-3 split regex, byte-level pre-tokenization without a prefix space, a BPE model
that takes whole pre-tokens found in the vocabulary as they are (`ignore_merges`), special tokens as added
tokens, and BOS prepended by the post-processor.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.errors import UnsupportedModelError
from engine.tokenizer_data import (
    LLAMA3_SPLIT_PATTERN,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
)

KEY = "tokenizer.ggml."
PAD_TOKEN = "[PAD{}]"  # ids a tokenizer.json leaves out (named as bitnet.cpp's converter names them)
# Token types kept as tokenizer.json added tokens; CONTROL and UNUSED ones are marked special (skipped when
# decoding, as the engine skips them). On the way back both come in as CONTROL.
ADDED_TYPES = frozenset({TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED})
SKIPPED_TYPES = frozenset({TOKEN_CONTROL, TOKEN_UNUSED})


def _pre_tokenizer() -> dict[str, Any]:
    return {
        "type": "Sequence",
        "pretokenizers": [
            {
                "type": "Split",
                "pattern": {"Regex": LLAMA3_SPLIT_PATTERN},
                "behavior": "Isolated",
                "invert": False,
            },
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ],
    }


def tokenizer_json(metadata: Mapping[str, object]) -> dict[str, Any]:
    """The tokenizer.json document of a GGUF byte-level BPE vocabulary (`tokenizer.ggml.model = gpt2`)."""
    model = metadata.get(KEY + "model")
    if model != "gpt2":
        raise UnsupportedModelError(
            f"only byte-level BPE vocabularies (tokenizer.ggml.model = gpt2) become a tokenizer.json; "
            f"this one is {model!r}"
        )
    tokens = [str(t) for t in metadata[KEY + "tokens"]]  # type: ignore[union-attr]
    types = [int(t) for t in metadata[KEY + "token_type"]]  # type: ignore[union-attr]
    bos_id = int(metadata[KEY + "bos_token_id"])  # type: ignore[call-overload]
    bos = tokens[bos_id]
    added = [
        {
            "id": i,
            "content": token,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": types[i] in SKIPPED_TYPES,
        }
        for i, token in enumerate(tokens)
        if types[i] in ADDED_TYPES
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _pre_tokenizer(),
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": True,
            "vocab": {token: i for i, token in enumerate(tokens) if types[i] not in ADDED_TYPES},
            "merges": [str(m) for m in metadata.get(KEY + "merges", [])],  # type: ignore[union-attr]
        },
    }


def _split_pattern(pre: object) -> str | None:
    """The regex of the Split pre-tokenizer in a tokenizer.json pre_tokenizer (None when there is none)."""
    if not isinstance(pre, dict):
        return None
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for step in steps:
        if isinstance(step, dict) and step.get("type") == "Split":
            pattern = step.get("pattern", {})
            return pattern.get("Regex") if isinstance(pattern, dict) else None
    return None


def _merge_text(merge: object) -> str:
    if isinstance(merge, str):
        return merge
    if isinstance(merge, list) and len(merge) == 2 and all(isinstance(p, str) for p in merge):
        return f"{merge[0]} {merge[1]}"
    raise UnsupportedModelError(f"tokenizer.json merge {merge!r} is neither 'a b' nor ['a', 'b']")


def metadata_from_tokenizer_json(
    doc: Mapping[str, Any], vocab_size: int, bos_id: int, eos_id: int
) -> dict[str, object]:
    """GGUF tokenizer keys (the official file's set: no `.pre` key) for a byte-level BPE tokenizer.json.

    Tokens come from the BPE vocabulary and the added tokens (special ones become CONTROL, the others
    USER_DEFINED); ids the document leaves out up to `vocab_size` become `[PAD<id>]` placeholders.
    """
    model = doc.get("model")
    if not isinstance(model, dict) or model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise UnsupportedModelError("tokenizer.json holds no BPE model with a vocabulary")
    if model.get("byte_fallback"):
        raise UnsupportedModelError(
            "tokenizer.json is a SentencePiece-style BPE (byte_fallback); only byte-level BPE is converted"
        )
    pattern = _split_pattern(doc.get("pre_tokenizer"))
    if pattern != LLAMA3_SPLIT_PATTERN:
        raise UnsupportedModelError(
            "tokenizer.json does not split text with LLaMA-3's pre-tokenizer regex, the one the engine's "
            f"byte-level BPE uses (found {pattern!r})"
        )
    names: dict[int, str] = {}
    types: dict[int, int] = {}
    for token, token_id in model["vocab"].items():
        names[int(token_id)] = token
        types[int(token_id)] = TOKEN_NORMAL
    for added in doc.get("added_tokens", []):
        token_id = int(added["id"])
        names[token_id] = str(added["content"])
        types[token_id] = TOKEN_CONTROL if added.get("special") else TOKEN_USER_DEFINED
    if names and max(names) >= vocab_size:
        raise UnsupportedModelError(
            f"tokenizer.json defines token id {max(names)}, beyond the model's vocabulary of {vocab_size}"
        )
    for token_id in (bos_id, eos_id):
        if token_id not in names:
            raise UnsupportedModelError(f"tokenizer.json does not define the BOS/EOS token id {token_id}")
    tokens = [names.get(i, PAD_TOKEN.format(i)) for i in range(vocab_size)]
    return {
        KEY + "model": "gpt2",
        KEY + "tokens": tokens,
        KEY + "token_type": [types.get(i, TOKEN_USER_DEFINED) for i in range(vocab_size)],
        KEY + "merges": [_merge_text(m) for m in model.get("merges", [])],
        KEY + "bos_token_id": bos_id,
        KEY + "eos_token_id": eos_id,
    }
