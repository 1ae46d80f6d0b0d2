"""SentencePiece-style vocabularies (`tokenizer.ggml.model = llama`) tokenized the way llama.cpp does it.

llama.cpp does not replay a merge list: it splits the text into characters and repeatedly joins the adjacent
pair whose concatenation is a token of the highest score (ties: the leftmost pair), whether or not the two
halves are tokens themselves. What is left that is not a token is written as byte tokens (`<0xNN>`, else the
byte's own one-character token). A text is cut at user-defined tokens (and, when asked, at control and
unknown tokens) first; each remaining piece gets a leading space when the vocabulary asks for one
(`tokenizer.ggml.add_space_prefix`, default true) and follows a special token or starts the text, and its
spaces become U+2581.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from engine.errors import EngineError

SPM_SPACE = "\u2581"


class SpmEncoder:
    """Text -> ids for one vocabulary: score-ordered pair joins over characters, then byte fallback."""

    def __init__(self, tokens: Sequence[str], scores: Sequence[float]) -> None:
        self._ids = {token: i for i, token in enumerate(tokens)}  # repeated token: last id, as llama.cpp
        # llama.cpp compares scores as float32: round them the same way before any comparison.
        self._scores = np.asarray(scores, dtype=np.float32).astype(np.float64).tolist()
        self._bytes = [self._byte_token(b) for b in range(256)]
        self._longest = max(map(len, self._ids), default=0)  # in characters: no longer pair can be a token

    def _byte_token(self, byte: int) -> int | None:
        token = self._ids.get(f"<0x{byte:02X}>")
        if token is None and byte < 0x80:
            token = self._ids.get(chr(byte))
        return token

    def encode_piece(self, text: str) -> list[int]:
        """Ids of one piece of text whose spaces are already U+2581."""
        n = len(text)
        if n == 0:
            return []
        length = [1] * n  # symbol i covers text[i : i + length[i]]; 0 once joined into its left neighbour
        prev = list(range(-1, n - 1))
        nxt = [*range(1, n), -1]
        find, scores, longest, push = self._ids.get, self._scores, self._longest, heapq.heappush

        def pair(left: int, right: int) -> tuple[float, int, int, int] | None:
            size = length[left] + length[right]
            token = find(text[left : left + size]) if size <= longest else None
            return None if token is None else (-scores[token], left, right, size)

        queue = [p for p in (pair(i - 1, i) for i in range(1, n)) if p is not None]
        heapq.heapify(queue)
        while queue:
            _, left, right, size = heapq.heappop(queue)
            if length[left] == 0 or length[right] == 0 or length[left] + length[right] != size:
                continue  # one side has changed since this pair was offered
            length[left] = size
            length[right] = 0
            nxt[left] = nxt[right]
            if nxt[right] >= 0:
                prev[nxt[right]] = left
            for candidate in (
                pair(prev[left], left) if prev[left] >= 0 else None,
                pair(left, nxt[left]) if nxt[left] >= 0 else None,
            ):
                if candidate is not None:
                    push(queue, candidate)
        ids: list[int] = []
        i = 0
        while i >= 0:
            piece = text[i : i + length[i]]
            token = self._ids.get(piece)
            if token is not None:
                ids.append(token)
            else:
                ids.extend(self._fallback(piece))
            i = nxt[i]
        return ids

    def _fallback(self, piece: str) -> list[int]:
        ids = []
        for byte in piece.encode("utf-8"):
            token = self._bytes[byte]
            if token is None:
                raise EngineError(
                    f"the text holds byte 0x{byte:02X}, which this vocabulary cannot write: it has neither "
                    f"<0x{byte:02X}> nor a token of that byte"
                )
            ids.append(token)
        return ids


def split_at_specials(text: str, specials: Sequence[tuple[str, int]]) -> list[str | int]:
    """Text cut at every occurrence of the given tokens, longest first: raw pieces and token ids in order."""
    parts: list[str | int] = [text] if text else []
    for special, token in sorted(specials, key=lambda s: (-len(s[0]), s[1])):
        if not special:
            continue
        cut: list[str | int] = []
        for part in parts:
            if isinstance(part, int) or special not in part:
                cut.append(part)
                continue
            for k, raw in enumerate(part.split(special)):
                if k:
                    cut.append(token)
                if raw:
                    cut.append(raw)
        parts = cut
    return parts


def encode_spm(
    encoder: SpmEncoder, parts: Sequence[str | int], add_space_prefix: bool, bos: int | None
) -> list[int]:
    """llama.cpp's SPM tokenization of pre-cut text: a space before each raw piece that starts the text or
    follows a special token (when the vocabulary asks for it), spaces as U+2581, BOS first when given."""
    ids = [] if bos is None else [bos]
    after_special = True
    for part in parts:
        if isinstance(part, int):
            ids.append(part)
            after_special = True
            continue
        if add_space_prefix and after_special:
            part = " " + part
        ids.extend(encoder.encode_piece(part.replace(" ", SPM_SPACE)))
        after_special = False
    return ids
