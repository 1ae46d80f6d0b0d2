"""Parity with upstream llama.cpp (through llama-cpp-python): tokenizer, teacher-forced logits, greedy tokens.

The numpy reference checks the kernels against our own reading of the model; llama.cpp is a reading no one
here wrote. Both run the file `harness.peers.llama_cpp.reference_file` gives (the model, or its copy that
llama.cpp reads as the engine does).

Known, expected sources of difference (reported with the numbers):
- activations: bitnet.cpp (the engine's default) quantizes each token's activations to int8 with one scale;
  llama.cpp's TQ kernels quantize them in 256-value blocks (Q8_K), one scale per block. The engine's
  `block256` mode (engine.model.load_model(act_quant="block256")) does the same as llama.cpp;
- logits: llama.cpp multiplies the F16 tied embedding with the hidden state rounded to F16; the engine's `f32`
  logits use the F16 table with a float32 state, its `int8` logits an int8 copy of both;
- float summation order (SIMD lanes, threads) in every kernel: differences of a few ulp.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from engine.atomic import atomic_write
from engine.errors import EngineError
from engine.model import ACT_QUANT_MODES
from harness.errors import HarnessError
from harness.peers.llama_cpp import PRE_KEY, llama_cpp_missing, open_llama, reference_file, reference_version
from harness.phases.load import load_and_warm
from harness.receipts.digest import file_digest, finalize
from harness.receipts.files import load_receipt
from harness.receipts.schema import schema_errors

REFERENCE_LLAMA_CPP = "llama-cpp"
GGML_TYPE_F32 = 0  # llama.cpp KV cache type: float32, so the cache adds no rounding of its own

COSINE_MIN = 0.999
LOGIT_TOKENS = 64
GREEDY_STEPS = 32
TOP_K = 5
MATCHING_MODE = "block256"  # the engine mode that quantizes activations as llama.cpp does
RECEIPT_MODE = "token"  # benchmarks run the engine's default per-token activation quantization

TOKENIZER_CORPUS: tuple[str, ...] = (
    "",
    " ",
    "Hello, world!",
    "The capital of France is Paris.",
    "   leading and trailing spaces   ",
    "tabs\tand\nnewlines\r\n\n\nand runs     of   spaces",
    "\n\n\n",
    "digits 0 1 12 123 1234 12345 3.14159 1,000,000 2024-05-17",
    "unicode: café naïve Straße Ελληνικά русский 日本語 中文 한국어",
    "emoji 😀👍🏽🇫🇷 and symbols ©®™ ∑∫√ ≤≥",
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<|begin_of_text|> looks special but is plain text",
    "It's, we'll, they're, I'M, you'VE, she'd",
    "mIxEd CaSe WORDS and ALLCAPS",
    "a" * 64,
    "?!?!... --- ___ +++ ===",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
)
GREEDY_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a land far away,",
    "1, 2, 3, 4, 5,",
)
LOGIT_TEXT = (
    "The quick brown fox jumps over the lazy dog. In 1984, 42 programmers wrote code like f(x) = x * 2; "
    "later, they said: it's fine! Ünïcödé and 日本語 text follows, then more words to fill the sequence."
)


# -------------------------------------------------------------------- the two implementations
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


def _margin(logits: np.ndarray) -> float:
    top2 = np.partition(np.asarray(logits, np.float64), -2)[-2:]
    return float(top2[1] - top2[0])


class EngineImpl:
    """The engine: decode one token at a time (the GEMV path every generated token takes)."""

    def __init__(
        self,
        path: Path,
        act_quant: str,
        logits: str,
        threads: int | None,
        kernel: str = "auto",
        retune: bool = False,
    ) -> None:
        if act_quant not in ACT_QUANT_MODES:
            raise HarnessError(f"unknown activation quantization {act_quant!r}; choose {ACT_QUANT_MODES}")
        try:
            loaded = load_and_warm(
                path, kernel=kernel, threads=threads, logits=logits, act_quant=act_quant, retune=retune
            )
        except EngineError as exc:
            raise HarnessError(f"engine cannot load {path}: {exc}") from None
        self.model = loaded.model

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenizer.encode(text, add_bos=False)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.model.tokenizer.decode(ids)

    def sequence_logits(self, ids: Sequence[int]) -> np.ndarray:
        self.model.reset()
        return np.stack([self.model.decode(int(t)).copy() for t in ids])

    def greedy(self, prompt: Sequence[int], steps: int) -> tuple[list[int], list[float]]:
        self.model.reset()
        logits = self.model.prefill(list(prompt))
        out, margins = [], []
        for _ in range(steps):
            token = int(np.argmax(logits))
            out.append(token)
            margins.append(_margin(logits))
            logits = self.model.decode(token)
        return out, margins


class LlamaCppImpl:
    """Upstream llama.cpp through llama-cpp-python: float32 KV cache, all logits kept, CPU only.

    Sequences and prompts go in as one batch, llama.cpp's usual schedule; `one_token_at_a_time()` gives a view
    of the same loaded model that feeds them token by token instead (the engine's decode schedule).
    """

    incremental = False

    def __init__(self, path: Path, n_ctx: int, threads: int | None) -> None:
        self.llm = open_llama(
            path,
            threads or 2,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            logits_all=True,
            type_k=GGML_TYPE_F32,
            type_v=GGML_TYPE_F32,
        )

    def tokenize(self, text: str) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.llm.detokenize(list(ids)).decode("utf-8", errors="replace")

    def one_token_at_a_time(self) -> LlamaCppImpl:
        view = copy.copy(self)
        view.incremental = True
        return view

    def _feed(self, ids: Sequence[int]) -> None:
        self.llm.reset()
        if self.incremental:
            for token in ids:
                self.llm.eval([int(token)])
        else:
            self.llm.eval(list(ids))

    def sequence_logits(self, ids: Sequence[int]) -> np.ndarray:
        self._feed(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, prompt: Sequence[int], steps: int) -> tuple[list[int], list[float]]:
        self._feed(prompt)
        out, margins = [], []
        for _ in range(steps):
            logits = self.llm.scores[self.llm.n_tokens - 1]
            token = int(np.argmax(logits))
            out.append(token)
            margins.append(_margin(logits))
            self.llm.eval([token])
        return out, margins


# -------------------------------------------------------------------- comparisons
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
        "top1_agreement": float(np.mean(top1)) if top1 else 1.0,
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


def _logit_sequence(tokenizer_encode: Callable[[str], list[int]], bos: int, n: int) -> list[int]:
    body = tokenizer_encode(LOGIT_TEXT)
    if not body:
        raise HarnessError("the logit text encodes to no tokens")
    ids = [bos]
    while len(ids) < n:
        ids.extend(body)
    return ids[:n]


def explain(
    tokenizer: dict[str, Any], run: dict[str, Any], self_check: dict[str, Any] | None = None
) -> list[str]:
    """Plain sentences saying where the two differ and the known reason for each difference."""
    notes = []
    if tokenizer["mismatches"]:
        first = tokenizer["mismatches"][0]
        notes.append(
            f"tokenizer: {len(tokenizer['mismatches'])} of {tokenizer['strings']} strings differ "
            f"(first: {first['text']!r}); llama.cpp picks its pre-tokenizer regex from {PRE_KEY}"
        )
    lg = run["logits"]
    if lg["min_cosine"] < 1.0:
        where = "the engine's per-token int8 activations against llama.cpp's per-256-block Q8_K activations"
        if run["engine"]["act_quant"] == "block256":
            where = "float summation order (SIMD lanes, threads) and llama.cpp's F16 rounding of the state"
        if run["engine"]["logits"] == "int8":
            where += "; the engine's int8 logits (int8 embedding copy and int8 final state)"
        notes.append(
            f"logits: min cosine {lg['min_cosine']:.9f} (1 - {1 - lg['min_cosine']:.2g}) at position "
            f"{lg['worst_position']}, max |error| "
            f"{lg['max_abs_logit_error']:.4g} (logit std {lg['logit_std']:.3g}); cause: {where}"
        )
    for g in run["greedy"]["runs"]:
        if not g["match"]:
            notes.append(
                f"greedy: prompt {g['prompt']!r} diverges at step {g['first_divergence']} where the "
                f"reference's top-2 margin is {g['reference_margin_at_divergence']:.4g} (a near tie flipped "
                "by the differences above)"
            )
    if self_check is not None and (run["greedy"]["all_match"] is False or lg["min_cosine"] < 1.0):
        own = self_check["logits"]
        notes.append(
            f"noise floor: llama.cpp against itself ({self_check['schedule']}) has min cosine "
            f"{own['min_cosine']:.9f}, max |error| {own['max_abs_logit_error']:.4g} and "
            f"{self_check['greedy_matching']} of {self_check['greedy_runs']} greedy runs equal"
        )
    return notes


def reference_self_check(
    reference: LlamaCppImpl,
    seq: Sequence[int],
    ref_logits: np.ndarray,
    ref_greedy: Sequence[dict[str, Any]],
    steps: int,
) -> dict[str, Any]:
    """llama.cpp against itself: the same loaded model fed one token at a time instead of one batch.

    Nothing changes but the evaluation schedule, so its differences are float noise alone: the noise floor
    below which no engine-versus-llama.cpp difference can be read as a different reading of the model.
    """
    view = reference.one_token_at_a_time()
    greedy = compare_greedy(view, ref_greedy, steps)
    return {
        "schedule": "every sequence and prompt fed one token at a time, against one batch",
        "logits": compare_logits(view.sequence_logits(seq), ref_logits),
        "greedy_matching": sum(r["match"] for r in greedy["runs"]),
        "greedy_runs": len(greedy["runs"]),
        "first_divergence": [r["first_divergence"] for r in greedy["runs"]],
    }


def _reference_greedy(
    reference: Implementation, prompts: Sequence[str], prompt_ids: Sequence[list[int]], steps: int
) -> list[dict[str, Any]]:
    runs = []
    for text, ids in zip(prompts, prompt_ids, strict=True):
        tokens, margins = reference.greedy(ids, steps)
        runs.append({"prompt": text, "ids": ids, "tokens": tokens, "margins": margins})
    return runs


def run_parity(
    model: Path,
    *,
    act_quants: Sequence[str] = ACT_QUANT_MODES,
    logits: str = "f32",
    logit_tokens: int = LOGIT_TOKENS,
    greedy_steps: int = GREEDY_STEPS,
    prompts: Sequence[str] = GREEDY_PROMPTS,
    corpus: Sequence[str] = TOKENIZER_CORPUS,
    threads: int | None = None,
    kernel: str = "auto",
    retune: bool = False,
) -> dict[str, Any]:
    """Compare the engine (once per activation-quantization mode) with llama.cpp on one model file;
    `retune` times the families of `kernel="auto"` again before the first engine loads.

    The whole report as a JSON-ready dict; `passed` holds when the tokenizer agrees fully and the
    llama.cpp-matching mode (`block256`, else every mode run) matches every greedy token with cosine >=
    COSINE_MIN at every position.
    """
    if logit_tokens < 2 or greedy_steps < 1:
        raise HarnessError("need at least 2 logit tokens and 1 greedy step")
    unknown = [m for m in act_quants if m not in ACT_QUANT_MODES]
    if unknown or not act_quants:
        raise HarnessError(f"activation quantization must be among {', '.join(ACT_QUANT_MODES)}")
    reason = llama_cpp_missing()
    if reason is not None:
        raise HarnessError(reason)
    ref = reference_file(Path(model))
    engines = {
        mode: EngineImpl(ref.path, mode, logits, threads, kernel, retune and i == 0)  # one tuning is enough
        for i, mode in enumerate(act_quants)
    }
    first = next(iter(engines.values()))
    cfg = first.model.config
    tok = first.model.tokenizer
    prompt_ids = [[tok.bos_id, *tok.encode(p, add_bos=False)] for p in prompts]
    longest = max([logit_tokens, *(len(p) + greedy_steps for p in prompt_ids)])
    if longest > cfg.context_length:
        raise HarnessError(
            f"the comparison needs {longest} positions; the model's context is {cfg.context_length}"
        )
    reference = LlamaCppImpl(ref.path, n_ctx=min(cfg.context_length, max(longest, 64)), threads=threads)
    seq = _logit_sequence(reference.tokenize, tok.bos_id, logit_tokens)
    ref_logits = reference.sequence_logits(seq)
    ref_greedy = _reference_greedy(reference, prompts, prompt_ids, greedy_steps)
    tokenizer = compare_tokenizers(first, reference, corpus)
    self_check = reference_self_check(reference, seq, ref_logits, ref_greedy, greedy_steps)
    runs = []
    for mode, engine in engines.items():
        run: dict[str, Any] = {
            "engine": {
                "act_quant": mode,
                "logits": logits,
                "kernel": engine.model.kernel_family,
                "decode_path": "gemv, one token per step",
            },
            "logits": compare_logits(engine.sequence_logits(seq), ref_logits),
            "greedy": compare_greedy(engine, ref_greedy, greedy_steps),
        }
        run["explanations"] = explain(tokenizer, run, self_check)
        run["passed"] = bool(
            tokenizer["agreement"] == 1.0
            and run["greedy"]["all_match"]
            and run["logits"]["min_cosine"] >= COSINE_MIN
        )
        runs.append(run)
    # The verdict is the llama.cpp-matching mode's when it ran, else every requested mode's.
    judged = [r for r in runs if r["engine"]["act_quant"] == MATCHING_MODE] or runs
    return {
        "reference": reference_version(),
        "model": {
            "source": str(ref.source),
            "compared_file": str(ref.path),
            "converted": ref.converted,
            "changes": ref.changes,
            "architecture": cfg.arch,
            "format": cfg.weight_format,
        },
        "tokenizer": tokenizer,
        "reference_self_check": self_check,
        "runs": runs,
        "passed": all(r["passed"] for r in judged),
    }


def receipt_section(report: dict[str, Any], act_quant: str = "token") -> dict[str, Any]:
    """The receipt's `parity` object (schema v1.0.0 fields) from the run in `act_quant` mode.

    The default `token` is the mode benchmarks run in, so the numbers describe the receipt's own engine path.
    """
    run = next((r for r in report["runs"] if r["engine"]["act_quant"] == act_quant), None)
    if run is None:
        raise HarnessError(f"the parity report has no {act_quant!r} run for the receipt")
    lg = run["logits"]
    max_err = float(lg["max_abs_logit_error"])
    if not math.isfinite(max_err):
        raise HarnessError("parity produced a non-finite logit error; the receipt cannot hold it")
    return {
        "reference": f"{report['reference']} (act_quant {act_quant}, logits {run['engine']['logits']})",
        "tokens_compared": int(lg["tokens"]),
        "max_abs_logit_error": max_err,
        "top1_agreement": float(lg["top1_agreement"]),
    }


def write_receipt_copy(receipt_path: Path, model: Path, report: dict[str, Any]) -> Path:
    """`<receipt>.parity.json`: the receipt with its `parity` section set, re-digested, schema-checked."""
    receipt = load_receipt(receipt_path)
    recorded = (receipt.get("model") or {}).get("sha256") if isinstance(receipt.get("model"), dict) else None
    if recorded != file_digest(model).sha256:
        raise HarnessError(f"receipt {receipt_path} was not produced with {model} (model sha256 differs)")
    receipt["parity"] = receipt_section(report, RECEIPT_MODE)
    receipt = finalize(receipt)
    errors = schema_errors(receipt)
    if errors:
        where, message = errors[0]
        raise HarnessError(f"the receipt with a parity section fails the schema ({where}: {message})")
    out = receipt_path.with_name(receipt_path.name.removesuffix(".json") + ".parity.json")
    data = json.dumps(receipt, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False).encode("utf-8")
    with atomic_write(out) as fh:
        fh.write(data + b"\n")
    return out
