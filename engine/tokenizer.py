"""Text <-> token ids from a GGUF file's tokenizer metadata, built on the `tokenizers` library (no training).

Two vocabulary kinds are supported, as llama.cpp names them in `tokenizer.ggml.model`:
- `gpt2`: byte-level BPE (LLaMA-3, the official BitNet 2B-4T file, the project's synthetic models) with the
  LLaMA-3 pre-tokenizer split pattern. Whole pre-tokens found in the vocabulary are taken as they are, the way
  tiktoken (LLaMA-3's reference tokenizer) does.
- `llama`: SentencePiece-style BPE ('▁' for spaces, `<0xNN>` byte-fallback tokens, a space prefixed to the
  text); merges come from `tokenizer.ggml.merges` when present, else from `tokenizer.ggml.scores`.
Special (control) tokens are never produced from plain text that merely looks like them; `encode(...,
parse_special=True)` opts in. Decoding skips control and unused tokens and works on bytes, so a character
split across tokens comes out whole; `decode_stream()` gives the same text incrementally during generation.
"""

import codecs
import operator
import threading
from collections.abc import Iterable, Mapping

from tokenizers import AddedToken, Regex, models, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from engine.errors import EngineError, UnsupportedModelError
from engine.tokenizer_data import (
    BYTE_TO_UNICODE,
    LLAMA3_SPLIT_PATTERN,
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    TOKEN_UNUSED,
    TOKEN_USER_DEFINED,
    UNICODE_TO_BYTE,
)

MODEL_GPT2 = "gpt2"
MODEL_LLAMA = "llama"
SPM_SPACE = "\u2581"
UNKNOWN_TEXT = "\ufffd".encode()
SKIPPED_TYPES = frozenset({TOKEN_CONTROL, TOKEN_UNUSED})
KEY = "tokenizer.ggml."


class Tokenizer:
    """Encodes text to ids and decodes ids to text for one model's vocabulary."""

    def __init__(
        self,
        *,
        model: str,
        tokens: list[str],
        token_types: list[int],
        bos_id: int,
        eos_id: int,
        backend: HFTokenizer,
        add_space_prefix: bool,
    ) -> None:
        self.model = model
        self.tokens = tokens
        self.token_types = token_types
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.strips_leading_space = add_space_prefix
        self._backend = backend
        self._lock = threading.Lock()
        self._pieces: list[bytes | None] = [None] * len(tokens)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object]) -> "Tokenizer":
        """Build from GGUF metadata; unknown tokenizer models or missing/inconsistent keys raise one line."""
        model = _require(metadata, KEY + "model")
        if model not in (MODEL_GPT2, MODEL_LLAMA):
            raise UnsupportedModelError(
                f"tokenizer model {model!r} is not supported (expected gpt2 or llama)"
            )
        tokens = _str_list(metadata, KEY + "tokens")
        if not tokens:
            raise UnsupportedModelError("tokenizer.ggml.tokens is empty")
        types = _int_list(metadata, KEY + "token_type")
        if len(types) != len(tokens):
            raise UnsupportedModelError(
                f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
            )
        bos_id = _token_id(metadata, KEY + "bos_token_id", len(tokens))
        eos_id = _token_id(metadata, KEY + "eos_token_id", len(tokens))
        merges = _merge_pairs(metadata) if KEY + "merges" in metadata else None
        vocab: dict[str, int] = {}
        for i, token in enumerate(tokens):
            vocab.setdefault(token, i)
        if model == MODEL_GPT2:
            if merges is None:
                raise UnsupportedModelError("gpt2 tokenizer metadata lacks tokenizer.ggml.merges")
            missing = [b for b, c in enumerate(BYTE_TO_UNICODE) if c not in vocab]
            if missing:
                raise UnsupportedModelError(f"gpt2 vocabulary lacks the byte token for 0x{missing[0]:02x}")
            backend = _gpt2_backend(vocab, merges)
            add_space_prefix = False
        else:
            if merges is None:
                merges = _merges_from_scores(
                    tokens, types, _float_list(metadata, KEY + "scores", len(tokens))
                )
            unk = next((tokens[i] for i, t in enumerate(types) if t == TOKEN_UNKNOWN), None)
            add_space_prefix = bool(metadata.get(KEY + "add_space_prefix", True))
            backend = _llama_backend(vocab, merges, unk, add_space_prefix)
        specials = [
            AddedToken(tokens[i], special=True, normalized=False)
            for i, t in enumerate(types)
            if t == TOKEN_CONTROL
        ]
        backend.add_special_tokens(specials)
        backend.encode_special_tokens = True
        return cls(
            model=model,
            tokens=tokens,
            token_types=types,
            bos_id=bos_id,
            eos_id=eos_id,
            backend=backend,
            add_space_prefix=add_space_prefix,
        )

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool = True, parse_special: bool = False) -> list[int]:
        """Token ids of text, BOS first if add_bos; special-token text is plain unless parse_special."""
        with self._lock:
            self._backend.encode_special_tokens = not parse_special
            try:
                ids = self._backend.encode(text, add_special_tokens=False).ids
            finally:
                self._backend.encode_special_tokens = True
        return [self.bos_id, *ids] if add_bos else ids

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for in decoded text (empty for control and unused tokens)."""
        if not 0 <= token_id < len(self.tokens):
            raise EngineError(f"token id {token_id} is outside the vocabulary (0..{len(self.tokens) - 1})")
        piece = self._pieces[token_id]
        if piece is None:
            piece = self._piece(token_id)
            self._pieces[token_id] = piece
        return piece

    def _piece(self, token_id: int) -> bytes:
        token, kind = self.tokens[token_id], self.token_types[token_id]
        if kind in SKIPPED_TYPES:
            return b""
        if kind == TOKEN_UNKNOWN:
            return UNKNOWN_TEXT
        if kind == TOKEN_USER_DEFINED:
            return token.encode("utf-8")
        if self.model == MODEL_GPT2:
            return b"".join(
                bytes((UNICODE_TO_BYTE[c],)) if c in UNICODE_TO_BYTE else c.encode("utf-8") for c in token
            )
        if kind == TOKEN_BYTE and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            return bytes((int(token[3:5], 16),))
        return token.replace(SPM_SPACE, " ").encode("utf-8")

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a whole id sequence; special tokens are skipped, invalid UTF-8 becomes U+FFFD."""
        text = b"".join(self.token_bytes(int(i)) for i in ids).decode("utf-8", errors="replace")
        if self.strips_leading_space and text.startswith(" "):
            return text[1:]
        return text

    def decode_stream(self) -> "StreamDecoder":
        """An incremental decoder for generation: push ids one by one, get the newly complete text."""
        return StreamDecoder(self)


class StreamDecoder:
    """Emits text as ids arrive; bytes of a character split across tokens wait until it is complete.

    The concatenation of every `push` result and the final `flush()` equals `Tokenizer.decode` of all ids.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip = tokenizer.strips_leading_space

    def push(self, token_id: int) -> str:
        """New complete text after this token (possibly empty)."""
        return self._emit(self._utf8.decode(self._tokenizer.token_bytes(int(token_id))))

    def flush(self) -> str:
        """Whatever is still pending at the end (an incomplete character becomes U+FFFD)."""
        return self._emit(self._utf8.decode(b"", final=True))

    def _emit(self, text: str) -> str:
        if self._strip and text:
            self._strip = False
            if text.startswith(" "):
                return text[1:]
        return text


def _gpt2_backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> HFTokenizer:
    backend = HFTokenizer(_bpe(vocab, merges, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    return backend


def _llama_backend(
    vocab: dict[str, int], merges: list[tuple[str, str]], unk: str | None, add_space_prefix: bool
) -> HFTokenizer:
    backend = HFTokenizer(_bpe(vocab, merges, unk_token=unk, fuse_unk=True, byte_fallback=True))
    spaces = normalizers.Replace(" ", SPM_SPACE)
    backend.normalizer = (
        normalizers.Sequence([normalizers.Prepend(SPM_SPACE), spaces]) if add_space_prefix else spaces
    )
    return backend


def _bpe(vocab: dict[str, int], merges: list[tuple[str, str]], **options: object) -> models.BPE:
    try:
        return models.BPE(vocab, merges, **options)
    except Exception as exc:  # the library raises plain Exception subclasses for inconsistent merges
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedModelError(f"tokenizer merges do not match the tokens: {detail}") from None


def _merges_from_scores(tokens: list[str], types: list[int], scores: list[float]) -> list[tuple[str, str]]:
    """SentencePiece BPE as merges: every split of a piece into two pieces, higher-scored results first."""
    mergeable = (TOKEN_NORMAL, TOKEN_USER_DEFINED)
    pieces = {t: i for i, t in enumerate(tokens) if types[i] in mergeable}
    order = sorted((i for t, i in pieces.items() if len(t) > 1), key=lambda i: (-scores[i], i))
    merges: list[tuple[str, str]] = []
    for i in order:
        token = tokens[i]
        merges.extend(
            (token[:k], token[k:])
            for k in range(1, len(token))
            if token[:k] in pieces and token[k:] in pieces
        )
    return merges


def _require(metadata: Mapping[str, object], key: str) -> object:
    if key not in metadata:
        raise UnsupportedModelError(f"tokenizer metadata lacks {key}")
    return metadata[key]


def _as_list(metadata: Mapping[str, object], key: str) -> list[object]:
    value = _require(metadata, key)
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise UnsupportedModelError(f"{key} must be an array")
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _str_list(metadata: Mapping[str, object], key: str) -> list[str]:
    values = _as_list(metadata, key)
    if all(isinstance(v, str) for v in values):
        return values  # type: ignore[return-value]
    if all(isinstance(v, (str, bytes)) for v in values):
        return [v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v for v in values]
    raise UnsupportedModelError(f"{key} must be an array of strings")


def _int_list(metadata: Mapping[str, object], key: str) -> list[int]:
    try:
        return [operator.index(v) for v in _as_list(metadata, key)]
    except TypeError:
        raise UnsupportedModelError(f"{key} must be an array of integers") from None


def _float_list(metadata: Mapping[str, object], key: str, count: int) -> list[float]:
    try:
        values = [float(v) for v in _as_list(metadata, key)]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UnsupportedModelError(f"{key} must be an array of numbers") from None
    if len(values) != count:
        raise UnsupportedModelError(f"{key} has {len(values)} entries for {count} tokens")
    return values


def _token_id(metadata: Mapping[str, object], key: str, vocab_size: int) -> int:
    value = _require(metadata, key)
    try:
        if isinstance(value, bool):
            raise TypeError(key)
        token_id = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise UnsupportedModelError(f"{key} must be an integer") from None
    if not 0 <= token_id < vocab_size:
        raise UnsupportedModelError(f"{key} = {token_id} is outside the vocabulary of {vocab_size} tokens")
    return token_id


def _merge_pairs(metadata: Mapping[str, object]) -> list[tuple[str, str]]:
    pairs = []
    for merge in _str_list(metadata, KEY + "merges"):
        parts = merge.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise UnsupportedModelError(
                f"tokenizer.ggml.merges entry {merge!r} is not two tokens separated by a space"
            )
        pairs.append((parts[0], parts[1]))
    return pairs
