"""The engine's tokenizer against references no one here wrote: llama.cpp itself (through llama-cpp-python)
on SentencePiece and byte-level BPE vocabularies written with the engine's GGUF writer, and LLaMA-3's
reference tokenizer pipeline (a tokenizer.json document run by the `tokenizers` library) for files without
`tokenizer.ggml.pre`, as the official 2B-4T file is.

The llama.cpp tests are skipped with the reason when `llama_cpp` is not importable.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path
from pydoc_data.topics import topics

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer

from engine.constants import ARCH_BITNET
from engine.errors import UnsupportedModelError
from engine.gguf_writer import write_gguf
from engine.tokenizer import Tokenizer
from engine.tokenizer_data import (
    LLAMA3_SPLIT_PATTERN,
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    tokenizer_metadata,
)
from harness.peers.llama_cpp import llama_cpp_missing, llama_detokenize
from harness.peers.parity import TOKENIZER_CORPUS
from tests.conftest import tiny_metadata

MISSING = llama_cpp_missing()
needs_llama = pytest.mark.skipif(MISSING is not None, reason=f"llama.cpp comparison skipped: {MISSING}")

EXTRA = (
    " hello",
    "  two leading spaces",
    "trailing space ",
    "a  b   c",
    "\n starts with a newline",
    "<s> and </s> and <unk> look special",
    "user <|tool|> token and ``` fences ```x",
    "x<|tool|><|tool|>y",
    "Hello , world ! it 's fine . Isn 't it ?",
    "ℌ𝔢𝔩𝔩𝔬 – “quotes” — ellipsis…",
)


def _prose(n: int, size: int) -> list[str]:
    """n pieces of the standard library's own English documentation, size characters each."""
    text = "".join(topics[k] for k in sorted(topics))
    step = len(text) // n
    return [text[i * step : i * step + size] for i in range(n)]


CORPUS = (*TOKENIZER_CORPUS, *EXTRA, *_prose(30, 300))


# -------------------------------------------------------------------- SentencePiece vocabularies
def _candidate_pieces(limit: int) -> list[str]:
    """The most frequent 2-7 character substrings of words (spaces as U+2581) in the prose, ranked."""
    counts: Counter[str] = Counter()
    for chunk in _prose(60, 600):
        for word in chunk.split():
            word = "\u2581" + word
            for i in range(len(word)):
                for j in range(i + 2, min(len(word), i + 7) + 1):
                    counts[word[i:j]] += 1
    return [piece for piece, _ in counts.most_common(limit)]


VOCABULARIES = ("llama", "no_singles", "ascii_as_chars", "tied_scores", "no_space_prefix")


@cache
def spm_metadata(kind: str) -> dict[str, object]:
    """A SentencePiece vocabulary as llama.cpp reads it: <unk>, <s>, </s>, byte tokens, two user-defined
    tokens, single characters, scored pieces, one unused token. Kinds:
    - llama: every character of the pieces is a token too, 256 byte tokens (LLaMA's layout);
    - no_singles: the pieces alone, no single characters: text must be joined from characters that are no
      tokens, and what stays alone falls back to byte tokens;
    - ascii_as_chars: byte tokens for 0x80-0xFF only; ASCII falls back to its one-character tokens;
    - tied_scores: scores rounded to a handful of values, so the leftmost-pair rule decides most joins;
    - no_space_prefix: `tokenizer.ggml.add_space_prefix = false`.
    """
    pieces = _candidate_pieces(1500)
    chars = sorted({c for piece in pieces for c in piece})
    if kind == "ascii_as_chars":
        chars = sorted(set(chars) | set(map(chr, range(128))))
    singles = [] if kind == "no_singles" else [c for c in chars if c not in pieces]
    byte_range = range(0x80, 256) if kind == "ascii_as_chars" else range(256)
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in byte_range), "<|tool|>", "```"]
    types = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL, *[TOKEN_BYTE] * len(byte_range)]
    types += [TOKEN_USER_DEFINED, TOKEN_USER_DEFINED]
    scores = [0.0] * len(tokens)
    for rank, piece in enumerate([*singles, *pieces]):
        tokens.append(piece)
        types.append(TOKEN_NORMAL)
        score = -float(rank)
        scores.append(float(np.round(score / 300)) if kind == "tied_scores" else score)
    tokens.append("<unused_piece>")
    types.append(TOKEN_UNUSED)
    scores.append(0.0)
    meta: dict[str, object] = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
    }
    if kind == "no_space_prefix":
        meta["tokenizer.ggml.add_space_prefix"] = False
    return meta


def _vocab_file(path: Path, tokenizer: dict[str, object]) -> Path:
    """A vocabulary-only GGUF file (no tensors) written with the engine's writer; llama.cpp reads it whole."""
    meta = {**tiny_metadata(ARCH_BITNET, "tq2_0"), **tokenizer}
    meta[f"{ARCH_BITNET}.vocab_size"] = len(tokenizer["tokenizer.ggml.tokens"])  # type: ignore[arg-type]
    write_gguf(path, meta, [])
    return path


@pytest.fixture(scope="module")
def llama_vocab(tmp_path_factory: pytest.TempPathFactory):
    """llama.cpp's vocabulary of a tokenizer metadata set, loaded once per name."""
    from llama_cpp import Llama

    opened: dict[str, object] = {}

    def open_vocab(name: str, tokenizer: dict[str, object]):
        if name not in opened:
            path = _vocab_file(tmp_path_factory.mktemp("vocab") / f"{name}.gguf", tokenizer)
            opened[name] = Llama(model_path=str(path), vocab_only=True, verbose=False)
        return opened[name]

    return open_vocab


def _printed(llm, ids: list[int]) -> str:
    """llama.cpp's pieces of `ids` one after another (`llama_token_to_piece`, no space dropped, specials
    not rendered): what its examples print while generating."""
    import ctypes

    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    out = b""
    buffer = ctypes.create_string_buffer(256)
    for token in ids:
        n = llama_cpp.llama_token_to_piece(vocab, token, buffer, 256, 0, False)
        out += buffer.raw[:n]
    return out.decode("utf-8", errors="replace")


def _mismatches(pairs: list[tuple[str, object, object]]) -> list[tuple[str, object, object]]:
    return [(what, ours, theirs) for what, ours, theirs in pairs if ours != theirs]


@needs_llama
@pytest.mark.parametrize("kind", VOCABULARIES)
def test_spm_ids_match_llama_cpp(llama_vocab, kind: str) -> None:
    meta = spm_metadata(kind)
    tok, llm = Tokenizer.from_metadata(meta), llama_vocab(kind, meta)
    pairs = []
    for text in CORPUS:
        raw = text.encode("utf-8")
        pairs.append((text, tok.encode(text, add_bos=False), llm.tokenize(raw, add_bos=False, special=False)))
        pairs.append((text, tok.encode(text), llm.tokenize(raw, add_bos=True, special=False)))
        parsed = llm.tokenize(raw, add_bos=False, special=True)
        pairs.append((text, tok.encode(text, add_bos=False, parse_special=True), parsed))
    assert _mismatches(pairs) == []


@needs_llama
@pytest.mark.parametrize("kind", VOCABULARIES)
def test_spm_text_matches_llama_cpp(llama_vocab, kind: str) -> None:
    """decode = llama_detokenize (one leading space dropped from the first piece, none after a BOS);
    decode_stream = llama.cpp's pieces printed one by one (no space dropped)."""
    meta = spm_metadata(kind)
    tok, llm = Tokenizer.from_metadata(meta), llama_vocab(kind, meta)
    pairs = []
    for text in CORPUS:
        ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        pairs.append((text, tok.decode(ids), llama_detokenize(llm, ids)))
        pairs.append((text, tok.decode([tok.bos_id, *ids]), llama_detokenize(llm, [tok.bos_id, *ids])))
        stream = tok.decode_stream()
        streamed = "".join(stream.push(i) for i in ids) + stream.flush()
        pairs.append((text, streamed, _printed(llm, ids)))
    rng = np.random.default_rng(3)
    for _ in range(300):  # any ids: control, unknown, unused, user-defined and byte tokens among them
        ids = rng.integers(0, tok.vocab_size, size=int(rng.integers(1, 12))).tolist()
        pairs.append((str(ids), tok.decode(ids), llama_detokenize(llm, ids)))
    assert _mismatches(pairs) == []


# -------------------------------------------------------------------- byte-level BPE without `.pre`
# LLaMA-3's pre-tokenizer split pattern as its tokenizer.json writes it (typed out here, not imported).
LLAMA3_TOKENIZER_JSON_PATTERN = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
    "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


def llama3_reference(meta: dict[str, object]) -> HFTokenizer:
    """LLaMA-3's reference tokenizer over this vocabulary: the tokenizer.json document LLaMA-3 (and the
    official BitNet 2B-4T model) ships, with this vocabulary's tokens and merges, run by `tokenizers`."""
    tokens: list[str] = meta["tokenizer.ggml.tokens"]  # type: ignore[assignment]
    types: list[int] = meta["tokenizer.ggml.token_type"]  # type: ignore[assignment]
    special = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    doc = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": t, **special} for i, t in enumerate(tokens) if types[i] == 3],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": LLAMA3_TOKENIZER_JSON_PATTERN},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
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
            "vocab": {t: i for i, t in enumerate(tokens) if types[i] != 3},
            "merges": meta["tokenizer.ggml.merges"],
        },
    }
    return HFTokenizer.from_str(json.dumps(doc))


def test_the_split_pattern_is_llama3s() -> None:
    assert LLAMA3_SPLIT_PATTERN == LLAMA3_TOKENIZER_JSON_PATTERN


@pytest.mark.parametrize("vocab_size", [1024, 128256])
def test_without_pre_key_the_engine_tokenizes_as_llama3s_reference(vocab_size: int) -> None:
    meta = tokenizer_metadata(vocab_size)
    assert "tokenizer.ggml.pre" not in meta  # the official file's key set
    reference = llama3_reference(meta)
    engine = Tokenizer.from_metadata(meta)
    explicit = Tokenizer.from_metadata({**meta, "tokenizer.ggml.pre": "llama-bpe"})
    for text in (*CORPUS, *_prose(40, 2000)):
        parsed = reference.encode(text, add_special_tokens=False).ids  # special-token text parsed
        assert engine.encode(text, add_bos=False, parse_special=True) == parsed, text
        reference.encode_special_tokens = True  # special-token text kept as plain text, llama.cpp's default
        ids = reference.encode(text, add_special_tokens=False).ids
        reference.encode_special_tokens = False
        assert engine.encode(text, add_bos=False) == ids == explicit.encode(text, add_bos=False), text
        assert engine.decode(ids) == reference.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("pre", ["default", "gpt-2", "qwen2", ""])
def test_other_pre_tokenizers_are_refused(pre: str) -> None:
    with pytest.raises(UnsupportedModelError, match=f"tokenizer.ggml.pre = '{pre}' is not supported"):
        Tokenizer.from_metadata({**tokenizer_metadata(1024), "tokenizer.ggml.pre": pre})


@needs_llama
def test_llama_cpp_needs_the_pre_key_to_agree(llama_vocab) -> None:
    """Without `.pre` llama.cpp splits with its GPT-2 fallback; with `llama-bpe` it agrees on every string."""
    meta = tokenizer_metadata(128256)
    plain = llama_vocab("bpe-no-pre", meta)
    keyed = llama_vocab("bpe-llama-bpe", {**meta, "tokenizer.ggml.pre": "llama-bpe"})
    engine = Tokenizer.from_metadata(meta)
    differ = 0
    for text in CORPUS:
        ours = engine.encode(text, add_bos=False)
        assert keyed.tokenize(text.encode("utf-8"), add_bos=False, special=False) == ours, text
        differ += plain.tokenize(text.encode("utf-8"), add_bos=False, special=False) != ours
    assert differ >= len(CORPUS) // 4


@needs_llama
def test_bpe_text_matches_llama_cpp_except_its_space_cleanup(llama_vocab) -> None:
    """llama.cpp's detokenizer removes a space before . , ! ? and some contractions for BPE vocabularies;
    the engine keeps the text as the tokens spell it (as llama.cpp prints generated tokens)."""
    meta = {**tokenizer_metadata(128256), "tokenizer.ggml.pre": "llama-bpe"}
    llm, engine = llama_vocab("bpe-llama-bpe", meta), Tokenizer.from_metadata(meta)
    cleaned = 0
    for text in CORPUS:
        ids = engine.encode(text, add_bos=False)
        assert engine.decode(ids) == text == _printed(llm, ids)
        if llama_detokenize(llm, ids) != text:
            cleaned += 1
            assert " ?" in text or " ," in text or " ." in text or " !" in text or " '" in text
    assert llama_detokenize(llm, engine.encode("Hello , world !", add_bos=False)) == "Hello, world!"
    assert cleaned >= 1
