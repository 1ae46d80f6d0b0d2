"""What a parity comparison measures, whoever the reference is: tokenizer agreement, per-position logits,
greedy tokens, how peaked the reference's logits are, and the reference against itself (its noise floor).

A reference is a `Peer`: the file the engine runs, the version and kind of the other implementation, the
engine mode that quantizes activations as it does (the mode judged), and its known causes of difference.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

COSINE_MIN = 0.999
TOP_K = 5


class Implementation(Protocol):
    """What both sides offer: tokenize, detokenize, logits of every position of a sequence, greedy tokens."""

    def tokenize(self, text: str) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def sequence_logits(self, ids: Sequence[int]) -> np.ndarray:
        """[len(ids), vocab] float32: the logits after each position (teacher forcing)."""
        ...

    def greedy(self, prompt: Sequence[int], steps: int) -> tuple[list[int], list[float]]:
        """`steps` argmax tokens after `prompt`, and the top-1 minus top-2 logit margin of each step."""
        ...


class Reference(Implementation, Protocol):
    """A reference implementation, with views of itself that differ in one thing only (its noise floor)."""

    def noise_views(self) -> list[tuple[str, Implementation]]: ...


@dataclass
class Peer:
    """A reference ready for comparison: what it is, the file the engine runs, how the engine is judged."""

    kind: str
    version: str
    matching_mode: str  # the engine activation mode that quantizes as the reference does: the mode judged
    engine_path: Path
    model: dict[str, Any]  # source, compared_file, converted, changes
    open: Callable[[int], Reference]  # the context length the comparison needs -> the reference, loaded
    causes: dict[str, str]  # engine activation mode -> the known cause of logit differences
    tokenizer_hint: str = ""  # where a tokenizer difference would come from


def margin(logits: np.ndarray) -> float:
    """Top-1 minus top-2 logit."""
    top2 = np.partition(np.asarray(logits, np.float64), -2)[-2:]
    return float(top2[1] - top2[0])


def compare_tokenizers(a: Implementation, b: Implementation, corpus: Sequence[str]) -> dict[str, Any]:
    """Token ids and detokenized text of every string, engine (a) against reference (b)."""
    mismatches = []
    ids_equal = text_equal = 0
    for text in corpus:
        ia, ib = a.tokenize(text), b.tokenize(text)
        da, db = a.detokenize(ib), b.detokenize(ib)
        ids_equal += ia == ib
        text_equal += da == db
        if ia != ib or da != db:
            mismatches.append(
                {"text": text, "engine_ids": ia, "reference_ids": ib, "engine_text": da, "reference_text": db}
            )
    n = len(corpus)
    return {
        "strings": n,
        "ids_identical": ids_equal,
        "detokenized_identical": text_equal,
        "agreement": (ids_equal + text_equal) / (2 * n) if n else 1.0,
        "mismatches": mismatches,
    }


def _cosine(x: np.ndarray, y: np.ndarray) -> float:
    x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
    denom = float(np.linalg.norm(x64) * np.linalg.norm(y64))
    return float(x64 @ y64 / denom) if denom > 0 else float(np.array_equal(x64, y64))


def compare_logits(la: np.ndarray, lb: np.ndarray, k: int = TOP_K) -> dict[str, Any]:
    """Per position: cosine similarity, top-k overlap (shared ids / k), top-1 agreement, max |difference|."""
    cos, overlap, top1, err = [], [], [], []
    for x, y in zip(la, lb, strict=True):
        cos.append(_cosine(x, y))
        ta, tb = np.argsort(-x, kind="stable")[:k], np.argsort(-y, kind="stable")[:k]
        overlap.append(len(set(ta.tolist()) & set(tb.tolist())) / k)
        top1.append(bool(ta[0] == tb[0]))
        err.append(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    worst = int(np.argmin(cos)) if cos else 0
    return {
        "tokens": len(cos),
        "cosine": cos,
        "min_cosine": min(cos) if cos else 1.0,
        "worst_position": worst,
        "top5_overlap": overlap,
        "mean_top5_overlap": float(np.mean(overlap)) if overlap else 1.0,
        "top1": top1,
        "top1_agreement": float(np.mean(top1)) if top1 else 1.0,
        "abs_logit_error": err,
        "max_abs_logit_error": max(err) if err else 0.0,
        "logit_std": float(np.std(lb)) if len(lb) else 0.0,
    }


def compare_greedy(a: Implementation, reference_runs: Sequence[dict[str, Any]], steps: int) -> dict[str, Any]:
    """Greedy tokens of the engine from each prompt against the reference's; where they first differ."""
    runs = []
    for ref in reference_runs:
        ta, ma = a.greedy(ref["ids"], steps)
        tb, mb = ref["tokens"], ref["margins"]
        diverge = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=True)) if x != y), None)
        runs.append(
            {
                "prompt": ref["prompt"],
                "prompt_tokens": len(ref["ids"]),
                "engine": ta,
                "reference": tb,
                "match": diverge is None,
                "first_divergence": diverge,
                "engine_margin_at_divergence": None if diverge is None else ma[diverge],
                "reference_margin_at_divergence": None if diverge is None else mb[diverge],
                "min_reference_margin": min(mb) if mb else None,
            }
        )
    return {"steps": steps, "runs": runs, "all_match": all(r["match"] for r in runs)}


def reference_greedy(
    reference: Implementation, prompts: Sequence[str], prompt_ids: Sequence[list[int]], steps: int
) -> list[dict[str, Any]]:
    """The reference's greedy tokens and margins from every prompt."""
    runs = []
    for text, ids in zip(prompts, prompt_ids, strict=True):
        tokens, margins = reference.greedy(ids, steps)
        runs.append({"prompt": text, "ids": ids, "tokens": tokens, "margins": margins})
    return runs


def self_check(
    schedule: str,
    view: Implementation,
    seq: Sequence[int],
    logits: np.ndarray,
    greedy: Sequence[dict[str, Any]],
    steps: int,
) -> dict[str, Any]:
    """The reference against itself with one thing changed (`schedule` says what): nothing differs but that,
    so its differences are the noise floor below which no engine difference means a different reading."""
    runs = compare_greedy(view, greedy, steps)["runs"]
    return {
        "schedule": schedule,
        "logits": compare_logits(view.sequence_logits(seq), logits),
        "greedy_matching": sum(r["match"] for r in runs),
        "greedy_runs": len(runs),
        "first_divergence": [r["first_divergence"] for r in runs],
    }


def reference_margins(logits: np.ndarray, greedy: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """How peaked the reference's logits are: top-1 minus top-2 logit over positions and greedy steps."""
    positions = [margin(row) for row in logits]
    steps = [m for run in greedy for m in run["margins"]]
    return {
        "median_top1_margin_positions": statistics.median(positions) if positions else None,
        "median_top1_margin_greedy": statistics.median(steps) if steps else None,
        "min_top1_margin_greedy": min(steps) if steps else None,
    }
