"""Parity with an implementation no one here wrote: tokenizer, teacher-forced logits, greedy tokens.

Two references (`Peer`s): upstream llama.cpp through llama-cpp-python (the SiLU `bitnet` architecture; both
run the file `harness.peers.llama_cpp.reference_file` gives), and Hugging Face transformers'
BitNetForCausalLM (both architectures; `harness.peers.transformers_ref`). The numpy reference checks the
kernels against our own reading of the model; these are readings from outside.

Known, expected sources of difference from llama.cpp (reported with the numbers):
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
from typing import Any

import numpy as np

from engine.atomic import atomic_write
from engine.errors import EngineError
from engine.model import ACT_QUANT_MODES
from harness.errors import HarnessError
from harness.peers.llama_cpp import (
    PRE_KEY,
    llama_cpp_missing,
    llama_detokenize,
    open_llama,
    reference_file,
    reference_version,
)
from harness.peers.measures import (
    COSINE_MIN,
    Implementation,
    Peer,
    compare_greedy,
    compare_logits,
    compare_tokenizers,
    margin,
    reference_greedy,
    reference_margins,
    self_check,
)
from harness.peers.transformers_ref import REFERENCE_TRANSFORMERS, transformers_peer
from harness.phases.load import load_and_warm
from harness.phases.workload import model_file
from harness.receipts.digest import file_digest, finalize
from harness.receipts.files import load_receipt
from harness.receipts.schema import schema_errors

REFERENCE_LLAMA_CPP = "llama-cpp"
REFERENCES = (REFERENCE_LLAMA_CPP, REFERENCE_TRANSFORMERS)
GGML_TYPE_F32 = 0  # llama.cpp KV cache type: float32, so the cache adds no rounding of its own
ONE_TOKEN_AT_A_TIME = "one token at a time, not one batch"

LOGIT_TOKENS = 64
GREEDY_STEPS = 32
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


# -------------------------------------------------------------------- the engine and llama.cpp
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
            margins.append(margin(logits))
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
        return llama_detokenize(self.llm, ids)

    def one_token_at_a_time(self) -> LlamaCppImpl:
        view = copy.copy(self)
        view.incremental = True
        return view

    def noise_views(self) -> list[tuple[str, Implementation]]:
        return [(ONE_TOKEN_AT_A_TIME, self.one_token_at_a_time())]

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
            margins.append(margin(logits))
            self.llm.eval([token])
        return out, margins


# -------------------------------------------------------------------- the comparison
def _logit_sequence(tokenizer_encode: Callable[[str], list[int]], bos: int, n: int) -> list[int]:
    body = tokenizer_encode(LOGIT_TEXT)
    if not body:
        raise HarnessError("the logit text encodes to no tokens")
    ids = [bos]
    while len(ids) < n:
        ids.extend(body)
    return ids[:n]


def explain(
    tokenizer: dict[str, Any], run: dict[str, Any], peer: Peer, checks: Sequence[dict[str, Any]]
) -> list[str]:
    """Plain sentences saying where the engine and the reference differ and the known reason for each."""
    notes = []
    if tokenizer["mismatches"]:
        first = tokenizer["mismatches"][0]
        notes.append(
            f"tokenizer: {len(tokenizer['mismatches'])} of {tokenizer['strings']} strings differ "
            f"(first: {first['text']!r}){peer.tokenizer_hint}"
        )
    lg = run["logits"]
    if lg["min_cosine"] < 1.0:
        cause = peer.causes[run["engine"]["act_quant"]]
        if run["engine"]["logits"] == "int8":
            cause += "; the engine's int8 logits (int8 embedding copy and int8 final state)"
        notes.append(
            f"logits: min cosine {lg['min_cosine']:.9f} (1 - {1 - lg['min_cosine']:.2g}) at position "
            f"{lg['worst_position']}, max |error| "
            f"{lg['max_abs_logit_error']:.4g} (logit std {lg['logit_std']:.3g}); cause: {cause}"
        )
    for g in run["greedy"]["runs"]:
        if not g["match"]:
            notes.append(
                f"greedy: prompt {g['prompt']!r} diverges at step {g['first_divergence']} where the "
                f"reference's top-2 margin is {g['reference_margin_at_divergence']:.4g} (a near tie flipped "
                "by the differences above)"
            )
    if notes:
        for check in checks:
            own = check["logits"]
            notes.append(
                f"noise floor: {peer.kind} against itself ({check['schedule']}) has min cosine "
                f"{own['min_cosine']:.9f}, max |error| {own['max_abs_logit_error']:.4g} and "
                f"{check['greedy_matching']} of {check['greedy_runs']} greedy runs equal"
            )
    return notes


def llama_cpp_peer(model: Path, threads: int | None) -> Peer:
    """llama.cpp on the file it reads as the engine does (the model, or a converted copy beside it)."""
    reason = llama_cpp_missing()
    if reason is not None:
        raise HarnessError(reason)
    ref = reference_file(model_file(Path(model)))

    def open_reference(context: int) -> LlamaCppImpl:
        return LlamaCppImpl(ref.path, n_ctx=context, threads=threads)

    return Peer(
        kind=REFERENCE_LLAMA_CPP,
        version=reference_version(),
        matching_mode="block256",
        engine_path=ref.path,
        model={
            "source": str(model),
            "compared_file": str(ref.path),
            "converted": ref.converted,
            "changes": ref.changes,
        },
        open=open_reference,
        causes={
            "token": "the engine's per-token int8 activations, llama.cpp's per-256-block Q8_K activations",
            "block256": "float summation order (SIMD lanes, threads), llama.cpp's F16 rounding of the state",
        },
        tokenizer_hint=f"; llama.cpp picks its pre-tokenizer regex from {PRE_KEY}",
    )


def peer_for(reference: str, model: Path, threads: int | None) -> Peer:
    """The named reference, prepared for `model` (refusals before any engine work)."""
    if reference == REFERENCE_LLAMA_CPP:
        return llama_cpp_peer(model, threads)
    if reference == REFERENCE_TRANSFORMERS:
        return transformers_peer(model, threads)
    raise HarnessError(f"unknown reference {reference!r}; choose one of {', '.join(REFERENCES)}")


def run_parity(
    model: Path,
    *,
    reference: str = REFERENCE_LLAMA_CPP,
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
    """Compare the engine (once per activation-quantization mode) with a reference on one model;
    `retune` times the families of `kernel="auto"` again before the first engine loads.

    The whole report as a JSON-ready dict; `passed` holds when the tokenizer agrees fully and the mode that
    quantizes activations as the reference does (llama.cpp: `block256`, transformers: `token`; else every
    mode run) matches every greedy token with cosine >= COSINE_MIN at every position.
    """
    if logit_tokens < 2 or greedy_steps < 1:
        raise HarnessError("need at least 2 logit tokens and 1 greedy step")
    unknown = [m for m in act_quants if m not in ACT_QUANT_MODES]
    if unknown or not act_quants:
        raise HarnessError(f"activation quantization must be among {', '.join(ACT_QUANT_MODES)}")
    peer = peer_for(reference, Path(model), threads)
    engines = {
        mode: EngineImpl(peer.engine_path, mode, logits, threads, kernel, retune and i == 0)  # one tuning
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
    ref = peer.open(min(cfg.context_length, max(longest, 64)))
    seq = _logit_sequence(ref.tokenize, tok.bos_id, logit_tokens)
    ref_logits = ref.sequence_logits(seq)
    ref_greedy = reference_greedy(ref, prompts, prompt_ids, greedy_steps)
    tokenizer = compare_tokenizers(first, ref, corpus)
    checks = [
        self_check(name, view, seq, ref_logits, ref_greedy, greedy_steps) for name, view in ref.noise_views()
    ]
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
        run["explanations"] = explain(tokenizer, run, peer, checks)
        run["passed"] = bool(
            tokenizer["agreement"] == 1.0
            and run["greedy"]["all_match"]
            and run["logits"]["min_cosine"] >= COSINE_MIN
        )
        runs.append(run)
    # The verdict is the matching mode's when it ran, else every requested mode's.
    judged = [r for r in runs if r["engine"]["act_quant"] == peer.matching_mode] or runs
    return {
        "reference": peer.version,
        "reference_kind": peer.kind,
        "matching_mode": peer.matching_mode,
        "model": {**peer.model, "architecture": cfg.arch, "format": cfg.weight_format},
        "tokenizer": tokenizer,
        "reference_margins": reference_margins(ref_logits, ref_greedy),
        "reference_checks": checks,
        "runs": runs,
        "passed": all(r["passed"] for r in judged),
    }


def receipt_section(report: dict[str, Any], act_quant: str = "token") -> dict[str, Any]:
    """The receipt's `parity` object from the run in `act_quant` mode: the summary fields schema 1.0.0 always
    had, the reference's name and version, tokenizer agreement, every position's logits figures (from which
    `verify-receipt` recomputes the summary) and the greedy agreement.

    The default `token` is the mode benchmarks run in, so the numbers describe the receipt's own engine path.
    """
    run = next((r for r in report["runs"] if r["engine"]["act_quant"] == act_quant), None)
    if run is None:
        raise HarnessError(f"the parity report has no {act_quant!r} run for the receipt")
    lg, greedy, tok = run["logits"], run["greedy"], report["tokenizer"]
    positions = [
        {"cosine": c, "top5_overlap": o, "top1": t, "max_abs_error": e}
        for c, o, t, e in zip(
            lg["cosine"], lg["top5_overlap"], lg["top1"], lg["abs_logit_error"], strict=True
        )
    ]
    figures = [
        lg["max_abs_logit_error"],
        lg["min_cosine"],
        *(v for p in positions for v in (p["cosine"], p["max_abs_error"])),
    ]
    if not all(math.isfinite(float(v)) for v in figures):
        raise HarnessError("parity produced a non-finite logit figure; the receipt cannot hold it")
    margin_median = report["reference_margins"]["median_top1_margin_greedy"]
    section = {
        "reference": f"{report['reference']} (act_quant {act_quant}, logits {run['engine']['logits']})",
        "tokens_compared": int(lg["tokens"]),
        "max_abs_logit_error": float(lg["max_abs_logit_error"]),
        "top1_agreement": float(lg["top1_agreement"]),
        "reference_kind": report["reference_kind"],
        "reference_version": report["reference"],
        "engine_act_quant": act_quant,
        "engine_logits": run["engine"]["logits"],
        "tokenizer": {k: int(tok[k]) for k in ("strings", "ids_identical", "detokenized_identical")},
        "min_cosine": float(lg["min_cosine"]),
        "mean_top5_overlap": float(lg["mean_top5_overlap"]),
        "positions": positions,
        "greedy": {
            "steps": int(greedy["steps"]),
            "prompts": len(greedy["runs"]),
            "matching": sum(r["match"] for r in greedy["runs"]),
            "first_divergence": [r["first_divergence"] for r in greedy["runs"]],
        },
    }
    if margin_median is not None:
        section["median_top1_margin"] = float(margin_median)
    return section


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
