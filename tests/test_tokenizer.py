"""Tokenizer metadata layout, round trips, streaming, SentencePiece vocabularies, bad metadata."""

import gzip
import importlib.util
import time
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import EngineError, UnsupportedModelError
from engine.tokenizer import Tokenizer
from engine.tokenizer_data import (
    BYTE_TO_UNICODE,
    MERGES_RESOURCE,
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    read_merges_text,
    special_token_count,
    tokenizer_metadata,
    tokens_from_merges,
    trained_bpe,
)


def _load_trainer():
    """scripts/train_tokenizer.py, the offline tool behind the committed merges (not an installed module)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "train_tokenizer.py"
    spec = importlib.util.spec_from_file_location("train_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_TRAINER = _load_trainer()
merges_file_bytes, train_bpe = _TRAINER.merges_file_bytes, _TRAINER.train_bpe

VOCAB_SIZES = (1024, 32000, 128256)
TOKENIZER_KEYS = {
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
}
TEXTS = [
    "Hello, world!",
    "日本語のテキストと中文字符",
    "emoji 👩‍👩‍👧 🚀🎉 done",
    "combining e\u0301 a\u0308 n\u0303 and precomposed é ä ñ",
    "spaces:     runs   of  them    ",
    "tabs\tand\t\ttabs\nnew\nlines\n\n\n\r\nwindows\r\n",
    "digits 1 12 123 1234 12345 3.14159 1,000,000",
    "def f(x: int) -> int:\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "'s 'll 'RE I'm you'd",
    " leading space and trailing ",
    "\x00\x01 control bytes \x7f",
]


@pytest.fixture(scope="module")
def metadata() -> dict[int, dict[str, object]]:
    return {v: tokenizer_metadata(v) for v in VOCAB_SIZES}


@pytest.fixture(scope="module")
def tokenizers(metadata) -> dict[int, Tokenizer]:
    return {v: Tokenizer.from_metadata(m) for v, m in metadata.items()}


@pytest.mark.parametrize("vocab_size", VOCAB_SIZES)
def test_metadata_layout(metadata, vocab_size):
    meta = metadata[vocab_size]
    assert set(meta) == TOKENIZER_KEYS  # the official 2B-4T layout: no tokenizer.ggml.pre
    tokens, types, merges = (
        meta["tokenizer.ggml.tokens"],
        meta["tokenizer.ggml.token_type"],
        meta["tokenizer.ggml.merges"],
    )
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert len(tokens) == len(types) == vocab_size
    assert all(isinstance(t, str) for t in tokens) and all(type(t) is int for t in types)
    n_special = special_token_count(vocab_size)
    n_regular = vocab_size - n_special
    bos, eos = meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]
    assert (bos, eos) == (n_regular, n_regular + 1)
    assert tokens[bos] == "<|begin_of_text|>" and tokens[eos] == "<|end_of_text|>"
    assert types[n_regular:] == [TOKEN_CONTROL] * n_special
    assert all(t.startswith("<|reserved_special_token_") for t in tokens[n_regular + 2 :])
    assert TOKEN_CONTROL not in types[:n_regular]
    assert tokens[:256] == list(BYTE_TO_UNICODE)
    assert len(set(tokens)) == vocab_size
    # Every merge uses existing regular tokens and produces one; kept merges are a prefix in training order.
    index = {t: i for i, t in enumerate(tokens)}
    for merge in merges:
        a, b = merge.split(" ")
        assert index[a] < n_regular and index[b] < n_regular and index[a + b] < n_regular
        assert types[index[a + b]] == TOKEN_NORMAL
    assert merges == list(trained_bpe()[1][: len(merges)])
    unused = [i for i, t in enumerate(types) if t == TOKEN_UNUSED]
    if unused:
        assert unused == list(range(unused[0], n_regular))
        assert all(tokens[i].startswith("<|unused_") for i in unused)


def test_metadata_sizes():
    assert special_token_count(128256) == 256 and special_token_count(32000) == 16
    big = tokenizer_metadata(128256)
    assert big["tokenizer.ggml.bos_token_id"] == 128000 and big["tokenizer.ggml.eos_token_id"] == 128001
    assert big["tokenizer.ggml.tokens"][-1] == "<|reserved_special_token_253|>"
    assert len(big["tokenizer.ggml.merges"]) == len(trained_bpe()[1])  # all trained merges fit, rest padded
    small = tokenizer_metadata(1024)
    assert len(small["tokenizer.ggml.merges"]) == 1024 - 16 - 256  # truncated, no padding needed
    assert TOKEN_UNUSED not in small["tokenizer.ggml.token_type"]
    with pytest.raises(EngineError, match="too small"):
        tokenizer_metadata(200)


def test_committed_file_format_round_trips():
    raw = (resources.files("engine") / "data" / MERGES_RESOURCE).read_bytes()
    assert len(raw) < 2 * 2**20
    header, merges = read_merges_text(gzip.decompress(raw).decode("utf-8"))
    assert header["merges"] == len(merges) >= 16000 and header["split_pattern"] == "llama3"
    assert merges_file_bytes(merges, header) == raw  # the writer reproduces the committed bytes exactly


@pytest.mark.parametrize("vocab_size", VOCAB_SIZES)
@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(tokenizers, vocab_size, text):
    tok = tokenizers[vocab_size]
    ids = tok.encode(text, add_bos=False)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.bos_id for i in ids)
    with_bos = tok.encode(text)
    assert with_bos == [tok.bos_id, *ids]
    assert tok.decode(with_bos) == text


def test_empty_string(tokenizers):
    tok = tokenizers[128256]
    assert tok.encode("", add_bos=False) == []
    assert tok.encode("") == [tok.bos_id]
    assert tok.decode([]) == "" and tok.decode([tok.bos_id, tok.eos_id]) == ""


def test_trained_merges_compress(tokenizers):
    code = (resources.files("engine") / "tokenizer.py").read_text(encoding="utf-8")
    n_bytes = len(code.encode("utf-8"))
    assert len(tokenizers[128256].encode(code, add_bos=False)) < n_bytes / 3
    assert len(tokenizers[1024].encode(code, add_bos=False)) < n_bytes / 1.5


def test_digits_split_in_groups_of_three(tokenizers):
    tok = tokenizers[128256]
    pieces = [tok.decode([i]) for i in tok.encode("1234567890", add_bos=False)]
    assert "".join(pieces) == "1234567890" and max(len(p) for p in pieces) <= 3
    ends = {sum(len(p) for p in pieces[: k + 1]) for k in range(len(pieces))}
    assert {3, 6, 9, 10} <= ends


def test_whitespace_runs_become_few_tokens(tokenizers):
    tok = tokenizers[128256]
    assert len(tok.encode("\n" + " " * 8 + "return", add_bos=False)) <= 3
    assert tok.decode(tok.encode("a" + " " * 37 + "b", add_bos=False)) == "a" + " " * 37 + "b"


def test_special_tokens_only_when_asked(tokenizers):
    tok = tokenizers[128256]
    text = "<|begin_of_text|>hi<|end_of_text|><|reserved_special_token_5|><|unused_0|>"
    plain = tok.encode(text, add_bos=False)
    assert all(tok.token_types[i] == TOKEN_NORMAL for i in plain)
    assert tok.decode(plain) == text
    parsed = tok.encode(text, add_bos=False, parse_special=True)
    assert (
        parsed[0] == tok.bos_id
        and tok.eos_id in parsed
        and tok.tokens.index("<|reserved_special_token_5|>") in parsed
    )
    assert not any(tok.token_types[i] == TOKEN_UNUSED for i in parsed)  # unused slots are never produced
    assert tok.decode(parsed) == "hi<|unused_0|>"  # specials are skipped in decode
    assert tok.encode(text, add_bos=False) == plain  # parse_special does not stick


def test_decode_rejects_out_of_range(tokenizers):
    tok = tokenizers[1024]
    with pytest.raises(EngineError, match="outside the vocabulary"):
        tok.decode([5, 1024])
    with pytest.raises(EngineError):
        tok.decode_stream().push(-1)


@pytest.mark.parametrize("text", TEXTS)
def test_stream_decoder_emits_exactly_the_text(tokenizers, text):
    tok = tokenizers[1024]
    stream = tok.decode_stream()
    chunks = [stream.push(i) for i in tok.encode(text)]
    chunks.append(stream.flush())
    assert "".join(chunks) == text
    assert all("\ufffd" not in c for c in chunks)  # no half character is ever emitted


def test_stream_decoder_waits_for_split_characters(tokenizers):
    tok = tokenizers[1024]
    ids = tok.encode("日本🚀", add_bos=False)
    assert len(ids) > 3  # with 1024 tokens these characters span several byte tokens
    stream = tok.decode_stream()
    chunks = [stream.push(i) for i in ids]
    assert "" in chunks and [c for c in chunks if c] == ["日", "本", "🚀"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=1023), max_size=40))
def test_stream_matches_decode_on_any_ids(tokenizers, ids):
    tok = tokenizers[1024]
    stream = tok.decode_stream()
    assert "".join(stream.push(i) for i in ids) + stream.flush() == tok.decode(ids)


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=60))
def test_round_trip_any_text(tokenizers, text):
    tok = tokenizers[32000]
    assert tok.decode(tok.encode(text)) == text


def test_load_time_of_full_vocabulary(metadata):
    start = time.perf_counter()
    Tokenizer.from_metadata(metadata[128256])
    assert time.perf_counter() - start < 1.5


# A small SentencePiece-style vocabulary: <unk>, <s>, </s>, 256 byte-fallback tokens, then scored pieces.
SPM_PIECES = [
    ("▁", -1.0), ("h", -2.0), ("e", -2.0), ("l", -2.0), ("o", -2.0), ("w", -2.0), ("r", -2.0), ("d", -2.0),
    ("ll", -3.0), ("he", -3.5), ("llo", -4.0), ("hello", -4.5), ("▁hello", -5.0), ("or", -6.0), ("▁w", -6.5),
    ("▁wor", -7.0), ("ld", -7.5), ("▁world", -8.0),
]  # fmt: skip


def _spm_metadata(**extra: object) -> dict[str, object]:
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *(p for p, _ in SPM_PIECES)]
    types = [
        TOKEN_UNKNOWN,
        TOKEN_CONTROL,
        TOKEN_CONTROL,
        *[TOKEN_BYTE] * 256,
        *[TOKEN_NORMAL] * len(SPM_PIECES),
    ]
    scores = [0.0, 0.0, 0.0, *[0.0] * 256, *(s for _, s in SPM_PIECES)]
    meta = {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }
    meta.update(extra)
    return meta


@pytest.mark.parametrize(
    "text", ["hello world", "hello", " hello  world ", "héllo wörld 日本 🚀", "", "a\tb\nc"]
)
def test_sentencepiece_round_trip(text):
    """llama.cpp's rules: the prefixed space is dropped from the first piece only; after a BOS (whose piece
    is empty) it stays, and the stream, which continues a prompt, keeps it too."""
    tok = Tokenizer.from_metadata(_spm_metadata())
    ids = tok.encode(text)
    assert ids[0] == 1 and tok.decode(ids[1:]) == text
    assert tok.decode(ids) == (" " + text if text else "")
    stream = tok.decode_stream()
    assert "".join(stream.push(i) for i in ids) + stream.flush() == tok.decode(ids)


def test_sentencepiece_joins_follow_scores():
    tok = Tokenizer.from_metadata(_spm_metadata())
    ids = tok.encode("hello world", add_bos=False)
    assert [tok.tokens[i] for i in ids] == ["▁hello", "▁world"]
    assert [tok.tokens[i] for i in tok.encode("é", add_bos=False)] == ["▁", "<0xC3>", "<0xA9>"]
    merges = Tokenizer.from_metadata(_spm_metadata(**{"tokenizer.ggml.merges": ["h e", "l l"]}))
    assert merges.encode("hello world") == tok.encode("hello world")  # llama.cpp ignores merges here too
    no_prefix = Tokenizer.from_metadata(_spm_metadata(**{"tokenizer.ggml.add_space_prefix": False}))
    assert [no_prefix.tokens[i] for i in no_prefix.encode("hello", add_bos=False)] == ["hello"]
    assert no_prefix.decode(no_prefix.encode(" hello")) == " hello"


def test_sentencepiece_joins_characters_that_are_no_tokens():
    """'▁ab' and 'ab' are tokens, '▁', 'a' and 'b' are not: joins still start from single characters."""
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "ab", "▁ab"]
    meta = _spm_metadata(
        **{
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [TOKEN_UNKNOWN, *[TOKEN_CONTROL] * 2, *[TOKEN_BYTE] * 256, 1, 1],
            "tokenizer.ggml.scores": [0.0] * 259 + [-2.0, -1.0],
        }
    )
    tok = Tokenizer.from_metadata(meta)
    assert [tok.tokens[i] for i in tok.encode("abab", add_bos=False)] == ["▁ab", "ab"]
    assert [tok.tokens[i] for i in tok.encode("b", add_bos=False)] == ["<0xE2>", "<0x96>", "<0x81>", "<0x62>"]
    # A lone U+2581 is written as its three byte tokens and comes back as U+2581, not as a space (llama.cpp).
    assert tok.decode(tok.encode("abab b", add_bos=False)) == "abab\u2581b"


def test_sentencepiece_user_defined_tokens_are_always_cut_out():
    tokens = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), *(p for p, _ in SPM_PIECES)]
    meta = _spm_metadata()
    meta["tokenizer.ggml.tokens"] = [*tokens, "<tool>"]
    meta["tokenizer.ggml.token_type"] = [*meta["tokenizer.ggml.token_type"], TOKEN_USER_DEFINED]
    meta["tokenizer.ggml.scores"] = [*meta["tokenizer.ggml.scores"], 0.0]
    tok = Tokenizer.from_metadata(meta)
    ids = tok.encode("hello<tool>world", add_bos=False)
    assert [tok.tokens[i] for i in ids] == ["▁hello", "<tool>", "▁world"]  # a space after it, as llama.cpp
    assert tok.decode(ids) == "hello<tool> world"
    assert tok.encode("<s>hello", add_bos=False, parse_special=True)[:2] == [1, tok.tokens.index("▁hello")]


def test_unknown_and_unused_tokens_decode_to_nothing():
    tok = Tokenizer.from_metadata(_spm_metadata())
    assert tok.decode([0, tok.tokens.index("▁hello"), 1, 2]) == " hello"  # <unk> first: no space dropped
    assert tok.decode([tok.tokens.index("▁hello"), 0]) == "hello"


def test_sentencepiece_byte_without_a_token_is_an_error():
    few = {
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "a"],
        "tokenizer.ggml.token_type": [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL, TOKEN_NORMAL],
        "tokenizer.ggml.scores": [0.0] * 4,
    }
    tok = Tokenizer.from_metadata(_spm_metadata(**few))
    with pytest.raises(EngineError, match="byte 0xE2, which this vocabulary cannot write"):
        tok.encode("a")


def _gpt2_small() -> dict[str, object]:
    return dict(tokenizer_metadata(1024))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokenizer.ggml.model": "bert"}, "not supported"),
        ({"tokenizer.ggml.tokens": None}, "lacks tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.merges": None}, "lacks tokenizer.ggml.merges"),
        ({"tokenizer.ggml.token_type": None}, "lacks tokenizer.ggml.token_type"),
        ({"tokenizer.ggml.bos_token_id": None}, "lacks tokenizer.ggml.bos_token_id"),
        ({"tokenizer.ggml.token_type": [1, 1]}, "2 entries for 1024 tokens"),
        ({"tokenizer.ggml.eos_token_id": 5000}, "outside the vocabulary"),
        ({"tokenizer.ggml.bos_token_id": "1"}, "must be an integer"),
        ({"tokenizer.ggml.tokens": "abc"}, "must be an array"),
        ({"tokenizer.ggml.tokens": []}, "empty"),
        ({"tokenizer.ggml.merges": ["Ġ t", "no_space_here"]}, "two tokens separated by a space"),
        ({"tokenizer.ggml.merges": ["Ġ zzzzzz"]}, "merges do not match"),
        ({"tokenizer.ggml.token_type": ["x"] * 1024}, "array of integers"),
    ],
)
def test_bad_gpt2_metadata(change, message):
    meta = _gpt2_small()
    for key, value in change.items():
        if value is None:
            del meta[key]
        else:
            meta[key] = value
    with pytest.raises(UnsupportedModelError, match=message) as err:
        Tokenizer.from_metadata(meta)
    assert "\n" not in str(err.value)


def test_bad_gpt2_vocabulary_without_byte_tokens():
    meta = _gpt2_small()
    meta["tokenizer.ggml.tokens"] = ["x" + t for t in meta["tokenizer.ggml.tokens"]]
    with pytest.raises(UnsupportedModelError, match="byte token"):
        Tokenizer.from_metadata(meta)


def test_bad_llama_metadata():
    meta = _spm_metadata()
    del meta["tokenizer.ggml.scores"]
    with pytest.raises(UnsupportedModelError, match="lacks tokenizer.ggml.scores"):
        Tokenizer.from_metadata(meta)
    with pytest.raises(UnsupportedModelError, match="3 entries"):
        Tokenizer.from_metadata(_spm_metadata(**{"tokenizer.ggml.scores": [0.0, 1.0, 2.0]}))


def test_tokens_from_merges_rejects_unknown_parts():
    with pytest.raises(EngineError, match="merge 2"):
        tokens_from_merges(["a b", "abc d"])


def test_train_bpe_small_corpus(tmp_path):
    corpus = (resources.files("engine") / "tokenizer.py").read_text(encoding="utf-8")
    paths = []
    for i in range(3):
        path = tmp_path / f"part{i}.txt"
        path.write_text(
            corpus[i * len(corpus) // 3 : (i + 1) * len(corpus) // 3] + "\nnaïve 東京 🚀\n", encoding="utf-8"
        )
        paths.append(path)
    tokens, merges = train_bpe(paths, 400)
    assert 200 <= len(merges) <= 400
    assert tokens[:256] == list(BYTE_TO_UNICODE) and tokens == tokens_from_merges(merges)
    assert (tokens, merges) == train_bpe(paths, 400)  # deterministic
    n_special = 16
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens + [f"<|s{i}|>" for i in range(n_special)],
        "tokenizer.ggml.token_type": [TOKEN_NORMAL] * len(tokens) + [TOKEN_CONTROL] * n_special,
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": len(tokens),
        "tokenizer.ggml.eos_token_id": len(tokens) + 1,
    }
    tok = Tokenizer.from_metadata(meta)
    ids = tok.encode(corpus, add_bos=False)
    assert tok.decode(ids) == corpus
    assert len(ids) < len(corpus.encode("utf-8")) / 2
