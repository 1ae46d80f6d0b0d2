"""Text <-> token ids from a GGUF file's tokenizer metadata, encoding and decoding as llama.cpp does.

Two vocabulary kinds are supported, as llama.cpp names them in `tokenizer.ggml.model`:
- `gpt2`: byte-level BPE (LLaMA-3, the official BitNet 2B-4T file, the project's synthetic models), built
  on the `tokenizers` library with LLaMA-3's pre-tokenizer split pattern and whole pre-tokens found in the
  vocabulary taken as they are (LLaMA-3's reference tokenizer, tiktoken, does the same). That is also what
  the engine uses when `tokenizer.ggml.pre` is absent, as in the official file; llama.cpp then falls back to
  its GPT-2 pattern instead. Other `.pre` values than LLaMA-3's are refused.
- `llama`: SentencePiece vocabularies, tokenized by llama.cpp's own algorithm (engine/tokenizer_spm.py):
  score-ordered joins over characters, byte-token fallback, a space prefixed to the text; merges in the
  file are ignored, as llama.cpp ignores them.
Special (control and unknown) tokens are never produced from plain text that merely looks like them;
`encode(..., parse_special=True)` opts in. User-defined tokens always are. `decode` is llama.cpp's
`llama_detokenize` without special tokens, except that it never edits spaces around punctuation, which
llama.cpp's `clean_spaces` does for BPE vocabularies; `decode_stream()` gives the text as llama.cpp prints
generated tokens, piece by piece, and waits for a character split across tokens to be whole.
"""

import codecs
import operator
import threading
from collections.abc import Iterable, Mapping

from tokenizers import AddedToken, models
from tokenizers import Tokenizer as HFTokenizer

from engine.errors import EngineError, UnsupportedModelError
from engine.tokenizer_data import (
    BYTE_TO_UNICODE,
    TOKEN_BYTE,
    TOKEN_CONTROL,
    TOKEN_NORMAL,
    TOKEN_UNKNOWN,
    TOKEN_USER_DEFINED,
    UNICODE_TO_BYTE,
    llama3_pre_tokenizer,
)
from engine.tokenizer_spm import SPM_SPACE, SpmEncoder, encode_spm, split_at_specials

MODEL_GPT2 = "gpt2"
MODEL_LLAMA = "llama"
KEY = "tokenizer.ggml."
# `tokenizer.ggml.pre` values llama.cpp reads as LLaMA-3's pre-tokenizer; absent means the same here.
LLAMA3_PRE = ("llama-bpe", "llama3", "llama-v3")
SPECIAL_TYPES = frozenset({TOKEN_CONTROL, TOKEN_UNKNOWN})  # text only when parse_special


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
        backend: HFTokenizer | SpmEncoder,
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
        # SentencePiece text is cut at these before tokenizing (byte-level BPE: added tokens of the backend).
        self._specials: dict[int, list[tuple[str, int]]] = {
            kind: [] for kind in (TOKEN_USER_DEFINED, *SPECIAL_TYPES)
        }
        if model == MODEL_LLAMA:
            for i, kind in enumerate(token_types):
                if kind in self._specials:
                    self._specials[kind].append((tokens[i], i))

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
        backend: HFTokenizer | SpmEncoder
        if model == MODEL_GPT2:
            backend = _gpt2_backend(metadata, tokens, types)
            add_space_prefix = False
        else:
            backend = SpmEncoder(tokens, _float_list(metadata, KEY + "scores", len(tokens)))
            add_space_prefix = bool(metadata.get(KEY + "add_space_prefix", True))
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
        if isinstance(self._backend, SpmEncoder):
            specials = list(self._specials[TOKEN_USER_DEFINED])
            if parse_special:
                specials += [pair for kind in SPECIAL_TYPES for pair in self._specials[kind]]
            parts = split_at_specials(text, specials)
            bos = self.bos_id if add_bos else None
            return encode_spm(self._backend, parts, self.strips_leading_space, bos)
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
        """llama.cpp's piece of a token without special tokens: control, unknown, unused and undefined
        tokens give nothing, user-defined ones their text, byte tokens (SentencePiece) their byte."""
        token, kind = self.tokens[token_id], self.token_types[token_id]
        if kind == TOKEN_USER_DEFINED:
            return token.encode("utf-8")
        if kind == TOKEN_NORMAL and self.model == MODEL_GPT2:
            return b"".join(
                bytes((UNICODE_TO_BYTE[c],)) if c in UNICODE_TO_BYTE else c.encode("utf-8") for c in token
            )
        if kind == TOKEN_NORMAL:
            return token.replace(SPM_SPACE, " ").encode("utf-8")
        if kind == TOKEN_BYTE and self.model == MODEL_LLAMA and _is_byte_token(token):
            return bytes((int(token[3:5], 16),))
        return b""

    def decode(self, ids: Iterable[int]) -> str:
        """Text of a whole id sequence (llama.cpp's `llama_detokenize`, special tokens skipped): with a
        space-prefixing vocabulary the first token's piece loses one leading space; invalid UTF-8 becomes
        U+FFFD."""
        pieces = [self.token_bytes(int(i)) for i in ids]
        if self.strips_leading_space and pieces and pieces[0].startswith(b" "):
            pieces[0] = pieces[0][1:]
        return b"".join(pieces).decode("utf-8", errors="replace")

    def decode_stream(self) -> "StreamDecoder":
        """An incremental decoder for generation: push ids one by one, get the newly complete text."""
        return StreamDecoder(self)


class StreamDecoder:
    """Emits text as ids arrive, as llama.cpp prints generated tokens: every piece whole, leading spaces
    kept (the text continues a prompt); bytes of a character split across tokens wait until it is complete.

    The concatenation of every `push` result and the final `flush()` equals `Tokenizer.decode` of all ids,
    except that a space-prefixing vocabulary's first leading space is kept.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """New complete text after this token (possibly empty)."""
        return self._utf8.decode(self._tokenizer.token_bytes(int(token_id)))

    def flush(self) -> str:
        """Whatever is still pending at the end (an incomplete character becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


def _is_byte_token(token: str) -> bool:
    return len(token) == 6 and token.startswith("<0x") and token.endswith(">")


def _gpt2_backend(metadata: Mapping[str, object], tokens: list[str], types: list[int]) -> HFTokenizer:
    """Byte-level BPE with LLaMA-3's pre-tokenizer; special and user-defined tokens as added tokens."""
    pre = metadata.get(KEY + "pre")
    if pre is not None and pre not in LLAMA3_PRE:
        raise UnsupportedModelError(
            f"tokenizer.ggml.pre = {pre!r} is not supported: the engine splits byte-level BPE text with "
            f"LLaMA-3's pattern only (tokenizer.ggml.pre absent or one of {', '.join(LLAMA3_PRE)})"
        )
    if KEY + "merges" not in metadata:
        raise UnsupportedModelError("gpt2 tokenizer metadata lacks tokenizer.ggml.merges")
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    missing = [b for b, c in enumerate(BYTE_TO_UNICODE) if c not in vocab]
    if missing:
        raise UnsupportedModelError(f"gpt2 vocabulary lacks the byte token for 0x{missing[0]:02x}")
    try:
        bpe = models.BPE(vocab, _merge_pairs(metadata), ignore_merges=True)
    except Exception as exc:  # the library raises plain Exception subclasses for inconsistent merges
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnsupportedModelError(f"tokenizer merges do not match the tokens: {detail}") from None
    backend = HFTokenizer(bpe)
    backend.pre_tokenizer = llama3_pre_tokenizer()
    added = [
        AddedToken(tokens[i], special=t in SPECIAL_TYPES, normalized=False)
        for i, t in enumerate(types)
        if t in SPECIAL_TYPES or t == TOKEN_USER_DEFINED
    ]
    backend.add_tokens([a for a in added if not a.special])
    backend.add_special_tokens([a for a in added if a.special])
    backend.encode_special_tokens = True
    return backend


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
