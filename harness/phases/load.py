"""Load a model and get every kernel ready before any clock starts: the one way the harness loads a model.

numba compiles each kernel on first use (or loads it from its cache); `Model.warmup()` makes that happen now,
so no measured time and no generated token pays for it. A Ctrl-C that numba's cache loading swallowed is
raised again right after (harness.runtime.interrupts).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from engine.model import Model, load_model
from harness.runtime import interrupts


@dataclass(frozen=True)
class LoadedModel:
    """A model with its kernels ready, and the seconds that compiling or cache-loading them took."""

    model: Model
    jit_seconds: float


def load_and_warm(
    path: Path,
    *,
    kernel: str | Mapping[tuple[int, int], str] = "auto",
    threads: int | None = None,
    strict: bool | None = None,
    logits: str = "int8",
    act_quant: str = "token",
    on_warning: Callable[[str], None] | None = None,
    retune: bool = False,
) -> LoadedModel:
    """Load `path` (each near-miss note of the loader goes to `on_warning`), then prepare every kernel;
    `retune` times the kernel families of `kernel="auto"` again instead of reading the cached verdicts."""
    model = load_model(
        path,
        kernel=kernel,
        threads=threads,
        strict=strict,
        logits=logits,
        act_quant=act_quant,
        retune=retune and kernel == "auto",
    )
    if on_warning is not None:
        for warning in model.file.warnings:
            on_warning(warning)
    jit_seconds = model.warmup()
    interrupts.raise_if_swallowed()
    return LoadedModel(model, jit_seconds)
