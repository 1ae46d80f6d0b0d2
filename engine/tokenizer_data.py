"""LLaMA-3-style byte-level BPE tokenizer metadata built from the committed training result in engine/data/.

Synthetic models carry the same tokenizer keys as the official BitNet b1.58 2B-4T GGUF, so the loader and
`engine.tokenizer` exercise one code path for both. Layout (like LLaMA-3): regular tokens first (the 256 byte
tokens in byte order, then the merged tokens in training order, truncated to fit, then unused padding tokens
that no merge produces), then the special tokens. Special-token count rule: 256 when vocab_size >= 65536
(LLaMA-3: 128256 = 128000 regular + 256 specials), else 16. BOS is the first special, EOS the second.
"""

import gzip
import json
from functools import lru_cache
from importlib import resources

from tokenizers import Regex, pre_tokenizers

from engine.errors import EngineError

# The LLaMA-3 (tiktoken cl100k-like) pre-tokenizer split pattern.
LLAMA3_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def llama3_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """LLaMA-3's pre-tokenization: the split pattern, then GPT-2's byte-to-unicode mapping of each piece.

    One definition for the tokenizer and the offline trainer of the merges, so the two always split alike.
    """
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


MERGES_RESOURCE = "bpe_merges.txt.gz"
MERGES_HEADER_PREFIX = "#bitnet-harness-bpe v1 "

# llama.cpp token types (the values stored in tokenizer.ggml.token_type).
TOKEN_NORMAL = 1
TOKEN_UNKNOWN = 2
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5
TOKEN_BYTE = 6

BOS_TOKEN = "<|begin_of_text|>"
EOS_TOKEN = "<|end_of_text|>"
LARGE_VOCAB = 65536
SPECIALS_LARGE = 256
SPECIALS_SMALL = 16


def _bytes_to_unicode() -> list[str]:
    """GPT-2's printable stand-in character for each byte (index = byte value)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table: dict[int, int] = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = 256 + extra
            extra += 1
    return [chr(table[b]) for b in range(256)]


BYTE_TO_UNICODE: tuple[str, ...] = tuple(_bytes_to_unicode())
UNICODE_TO_BYTE: dict[str, int] = {c: b for b, c in enumerate(BYTE_TO_UNICODE)}


def tokens_from_merges(merges: list[str]) -> list[str]:
    """Regular tokens implied by a merge list: 256 byte tokens, then each new merge result in merge order.

    Raises EngineError when a merge uses a token that does not exist yet (a corrupt or reordered list).
    """
    tokens = list(BYTE_TO_UNICODE)
    known = set(tokens)
    for line_no, merge in enumerate(merges, 1):
        parts = merge.split(" ")
        if len(parts) != 2 or parts[0] not in known or parts[1] not in known:
            raise EngineError(f"BPE merge {line_no} ({merge!r}) uses a token that does not exist before it")
        result = parts[0] + parts[1]
        if result not in known:
            known.add(result)
            tokens.append(result)
    return tokens


def read_merges_text(text: str) -> tuple[dict[str, object], list[str]]:
    """Parse the committed merges file: one JSON header line, then one "a b" merge per line."""
    lines = text.split("\n")
    if not lines or not lines[0].startswith(MERGES_HEADER_PREFIX):
        raise EngineError("BPE merges file lacks its header; regenerate it with scripts/train_tokenizer.py")
    header = json.loads(lines[0][len(MERGES_HEADER_PREFIX) :])
    merges = [line for line in lines[1:] if line]
    return header, merges


@lru_cache(maxsize=1)
def trained_bpe() -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """The committed training result: (regular tokens, merges, token index each merge produces)."""
    raw = (resources.files("engine") / "data" / MERGES_RESOURCE).read_bytes()
    _, merges = read_merges_text(gzip.decompress(raw).decode("utf-8"))
    tokens = tokens_from_merges(merges)
    index = {t: i for i, t in enumerate(tokens)}
    produced = tuple(index[m.replace(" ", "", 1)] for m in merges)
    return tuple(tokens), tuple(merges), produced


def special_token_count(vocab_size: int) -> int:
    """Specials at the end of the vocabulary: 256 for LLaMA-3-sized vocabularies (>= 65536), else 16."""
    return SPECIALS_LARGE if vocab_size >= LARGE_VOCAB else SPECIALS_SMALL


def special_tokens(count: int) -> list[str]:
    """BOS, EOS, then `<|reserved_special_token_N|>` for the rest."""
    return [BOS_TOKEN, EOS_TOKEN, *(f"<|reserved_special_token_{i}|>" for i in range(count - 2))]


def tokenizer_metadata(vocab_size: int) -> dict[str, object]:
    """GGUF tokenizer keys for a byte-level BPE vocabulary of exactly vocab_size tokens (2B-4T layout)."""
    n_special = special_token_count(vocab_size)
    n_regular = vocab_size - n_special
    if n_regular < len(BYTE_TO_UNICODE):
        raise EngineError(
            f"vocab_size {vocab_size} is too small: need 256 byte tokens plus {n_special} special tokens"
        )
    trained, merges, produced = trained_bpe()
    regular = list(trained[:n_regular])
    # Keep the longest merge prefix whose results all fit: every token a kept merge uses then exists.
    n_merges = next((i for i, p in enumerate(produced) if p >= n_regular), len(merges))
    n_unused = n_regular - len(regular)
    regular += [f"<|unused_{i}|>" for i in range(n_unused)]
    tokens = regular + special_tokens(n_special)
    token_type = (
        [TOKEN_NORMAL] * (n_regular - n_unused) + [TOKEN_UNUSED] * n_unused + [TOKEN_CONTROL] * n_special
    )
    if len(set(tokens)) != len(tokens):
        raise EngineError("trained BPE vocabulary collides with the unused or special token names")
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": token_type,
        "tokenizer.ggml.merges": list(merges[:n_merges]),
        "tokenizer.ggml.bos_token_id": n_regular,
        "tokenizer.ggml.eos_token_id": n_regular + 1,
    }
