"""Greedy and sampled generation on a Model, streaming each token to a callback as it is chosen.

Sampling (temperature, top-k, top-p) runs in one numba function over buffers allocated once per generation,
so a decode step allocates nothing in proportion to the vocabulary. The same seed gives the same tokens.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numba import njit

from engine.errors import EngineError

if TYPE_CHECKING:
    from engine.model import Model


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 is greedy; top_k 0 and top_p 1.0 switch those filters off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise EngineError(f"temperature must be a finite number >= 0 (got {self.temperature})")
        if self.top_k < 0:
            raise EngineError(f"top-k must be >= 0 (got {self.top_k})")
        if not 0 < self.top_p <= 1:
            raise EngineError(f"top-p must be in (0, 1] (got {self.top_p})")
        if self.seed < 0:
            raise EngineError(f"seed must be >= 0 (got {self.seed})")


@dataclass
class GenerationResult:
    """Generated ids (EOS excluded), prompt seconds, seconds of every decode step, and why it stopped.

    The first token comes from the prefill logits, so `decode_seconds` has one entry per later token.
    """

    tokens: list[int] = field(default_factory=list)
    prefill_seconds: float = 0.0
    decode_seconds: list[float] = field(default_factory=list)
    stopped_on_eos: bool = False


@njit(cache=True)
def _sample(logits, temperature, top_k, top_p, u, probs, work):
    """Index drawn from softmax(logits / temperature) restricted to top-k, then top-p; u uniform in [0, 1).

    Ties at a cut-off value are kept (the filters compare probabilities, not ranks).
    """
    vocab = logits.shape[0]
    best = logits[0]
    for i in range(1, vocab):
        if logits[i] > best:
            best = logits[i]
    inv_t = 1.0 / temperature
    total = 0.0
    for i in range(vocab):
        p = math.exp((np.float64(logits[i]) - best) * inv_t)
        probs[i] = p
        total += p
    cutoff = 0.0
    if (0 < top_k < vocab) or top_p < 1.0:
        work[:] = probs
        work.sort()
        if 0 < top_k < vocab:
            cutoff = work[vocab - top_k]
        if top_p < 1.0:
            kept = 0.0
            for j in range(vocab - 1, -1, -1):
                if work[j] < cutoff:
                    break
                kept += work[j]
            acc = 0.0
            for j in range(vocab - 1, -1, -1):
                acc += work[j]
                if acc >= top_p * kept:
                    cutoff = max(cutoff, work[j])
                    break
        total = 0.0
        for i in range(vocab):
            if probs[i] >= cutoff:
                total += probs[i]
    target = u * total
    acc = 0.0
    last = 0
    for i in range(vocab):
        if probs[i] >= cutoff:
            acc += probs[i]
            last = i
            if acc > target:
                return i
    return last


class Sampler:
    """Chooses the next token from a logits buffer; owns its scratch buffers and its random generator."""

    def __init__(self, vocab_size: int, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.Generator(np.random.PCG64(params.seed))
        self._probs = np.zeros(vocab_size if params.temperature > 0 else 0, np.float64)
        self._work = np.zeros_like(self._probs)

    def __call__(self, logits: np.ndarray) -> int:
        p = self.params
        if p.temperature == 0:
            return int(np.argmax(logits))
        u = self._rng.random()
        return int(_sample(logits, p.temperature, p.top_k, p.top_p, u, self._probs, self._work))


def generate(
    model: Model,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    params: SamplingParams | None = None,
    on_token: Callable[[int], None] | None = None,
) -> GenerationResult:
    """Empty the cache, prefill the prompt, then choose and decode tokens until EOS or the limit.

    At most `max_new_tokens` tokens, and never past the context: the last token needs no decode, so up to
    context - len(prompt) + 1 tokens fit. `on_token` sees every kept token as soon as it is chosen.
    """
    params = params or SamplingParams()
    prompt = [int(t) for t in prompt_ids]
    if not prompt:
        raise EngineError("the prompt is empty; give at least one token")
    if max_new_tokens < 0:
        raise EngineError(f"the number of tokens to generate must be >= 0 (got {max_new_tokens})")
    context = model.config.context_length
    if len(prompt) > context:
        raise EngineError(f"the prompt has {len(prompt)} tokens; the context holds {context}")
    limit = min(max_new_tokens, context - len(prompt) + 1)
    sampler = Sampler(model.config.vocab_size, params)
    eos = model.tokenizer.eos_id
    result = GenerationResult()
    model.reset()
    start = time.perf_counter()
    logits = model.prefill(prompt)
    result.prefill_seconds = time.perf_counter() - start
    while len(result.tokens) < limit:
        token = sampler(logits)
        if token == eos:
            result.stopped_on_eos = True
            break
        result.tokens.append(token)
        if on_token is not None:
            on_token(token)
        if len(result.tokens) == limit:
            break
        start = time.perf_counter()
        logits = model.decode(token)
        result.decode_seconds.append(time.perf_counter() - start)
    return result
