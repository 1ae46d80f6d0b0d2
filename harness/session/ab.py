"""Interleaved runs: two configurations (A/B), or the engine and a peer, measured round by round in one
process, so drift and a neighbour's load hit both alike.

An A/B run compares two engine configurations of one model file (two kernel families, or two thread counts),
each loaded once. Each side gets its own benchmark section and receipt; its trace counts exactly its own
measured repetitions.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba

from engine.generate import SamplingParams
from engine.model import KERNEL_MODES, Model, set_threads
from harness.errors import HarnessError
from harness.phases.benchmark import generation_row, summarize

StepFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Side:
    """One configuration: the kernel mode and the thread count (None: numba's default, all cores)."""

    name: str
    kernel: str
    threads: int | None

    def describe(self) -> str:
        return f"{self.name}: --kernel {self.kernel} --threads {self.threads or 'default'}"

    def activate(self) -> None:
        """Apply this side's thread count before each of its repetitions (the other side changes it)."""
        set_threads(self.threads if self.threads is not None else numba.config.NUMBA_NUM_THREADS)


def _pair(text: str, option: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2 or not all(parts):
        raise HarnessError(f"{option} takes two comma-separated values, e.g. {option} A,B (got {text!r})")
    if parts[0] == parts[1]:
        raise HarnessError(
            f"{option}: both sides are {parts[0]!r}; an A/B run needs two different configurations"
        )
    return parts[0], parts[1]


def parse_sides(
    ab_kernel: str | None, ab_threads: str | None, kernel: str, threads: int | None
) -> tuple[Side, Side] | None:
    """The two sides from --ab-kernel / --ab-threads (one of them; the other setting is shared), or None."""
    if ab_kernel is not None and ab_threads is not None:
        raise HarnessError("give --ab-kernel or --ab-threads, not both: an A/B run varies one thing")
    if ab_kernel is not None:
        a, b = _pair(ab_kernel, "--ab-kernel")
        for k in (a, b):
            if k not in KERNEL_MODES:
                raise HarnessError(
                    f"--ab-kernel: unknown kernel {k!r}; choose from {', '.join(KERNEL_MODES)}"
                )
        return Side("A", a, threads), Side("B", b, threads)
    if ab_threads is not None:
        a, b = _pair(ab_threads, "--ab-threads")
        try:
            ta, tb = int(a), int(b)
        except ValueError:
            raise HarnessError(f"--ab-threads takes two integers (got {ab_threads!r})") from None
        limit = numba.config.NUMBA_NUM_THREADS
        for t in (ta, tb):
            if not 1 <= t <= limit:
                raise HarnessError(f"--ab-threads: {t} is outside 1..{limit} (this machine's numba threads)")
        return Side("A", kernel, ta), Side("B", kernel, tb)
    return None


Generation = Callable[[bool], tuple[dict[str, Any], list[int]]]
"""One measured or warm-up generation: (benchmark row, token ids); True on the first measured round."""


def engine_generation(
    side: Side, model: Model, prompt: list[int], tokens: int, params: SamplingParams
) -> Generation:
    """One engine generation on `side`; the model's trace is emptied on the first measured round, then
    accumulates exactly this side's measured repetitions."""

    def one(first_measured: bool) -> tuple[dict[str, Any], list[int]]:
        side.activate()
        if first_measured:
            model.trace.reset()
        return generation_row(model, prompt, tokens, params)

    return one


def interleave(
    runs: Sequence[Generation], repetitions: int, warmup: int, on_step: StepFn | None = None
) -> list[tuple[dict[str, Any], list[int]]]:
    """Warm-up rounds, then `repetitions` measured rounds, each round one generation per run in order.

    Returns per run (benchmark section of its measured rows, tokens of its first measured repetition).
    """
    if repetitions < 1:
        raise HarnessError(f"--repetitions must be >= 1 (got {repetitions})")
    total = (warmup + repetitions) * len(runs)
    done = 0
    rows: list[list[dict[str, Any]]] = [[] for _ in runs]
    first: list[list[int]] = [[] for _ in runs]
    for round_ in range(warmup + repetitions):
        measured = round_ >= warmup
        for i, run in enumerate(runs):
            row, ids = run(measured and round_ == warmup)
            if measured:
                rows[i].append(row)
                first[i] = first[i] or ids
            done += 1
            if on_step is not None:
                on_step(done, total)
    return [(summarize(r, warmup), f) for r, f in zip(rows, first, strict=True)]
