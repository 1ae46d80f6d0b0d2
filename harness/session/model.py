"""The model a command runs, reported as it is prepared: the file (a user's, or a preset written once into
the cache) and the loaded model with its kernels ready."""

from collections.abc import Iterable
from pathlib import Path

from engine.model import Model
from harness.errors import HarnessError
from harness.phases.load import LoadedModel, load_and_warm
from harness.phases.workload import ModelSource, resolve_model
from harness.progress import Progress


def model_source(
    model: Path | None, preset: str, fmt: str, arch: str, seed: int, progress: Progress
) -> ModelSource:
    """The user's file, else the preset model (written on first use, which can take a while)."""
    if model is None:
        with progress.status(f"preparing the {preset} {fmt} preset model (written once, then cached)"):
            return resolve_model(None, preset, fmt, arch, seed)
    return resolve_model(model, preset, fmt, arch, seed)


def ready_model(
    source: ModelSource,
    kernel: str,
    threads: int | None,
    strict: bool | None,
    progress: Progress,
    retune: bool = False,
) -> LoadedModel:
    """Load the model and compile (or load from numba's cache) every kernel, outside any measured time;
    `retune` times the kernel families of `--kernel auto` again."""
    with progress.status(f"loading {source.path} and preparing kernels"):
        loaded = load_and_warm(
            source.path,
            kernel=kernel,
            threads=threads,
            strict=strict,
            on_warning=lambda w: progress.note(f"warning: {w}"),
            retune=retune,
        )
    progress.note(
        f"loaded in {loaded.model.load_seconds:.2f} s; kernels ready in {loaded.jit_seconds:.2f} s "
        "(JIT, not measured)"
    )
    note = choice_note(loaded.model)
    if note:
        progress.note(note)
    return loaded


def check_retune(retune: bool, kernels: Iterable[str]) -> None:
    """`--retune` re-times `--kernel auto`; asked for a run that never uses auto, it is an error."""
    used = sorted(set(kernels))
    if retune and "auto" not in used:
        raise HarnessError(
            f"--retune times the kernel families for --kernel auto; this run uses {', '.join(used)}"
        )


def choice_note(model: Model) -> str | None:
    """What `--kernel auto` chose and how: timed now or read from the cache, and any noisy shape."""
    sel = model.kernel_selection
    if sel.mode != "auto":
        return None
    families = ", ".join(sorted(set(sel.kernels.values())))
    cached = sum(sel.cached.values())
    how = (
        f"{cached} of {len(sel.kernels)} shapes from the cache (--retune times them again)"
        if cached
        else (f"timed now in {sel.seconds:.2f} s")
    )
    noisy = [k for k, t in sel.shapes.items() if t.noisy]
    warning = f"; timings too noisy for {', '.join(noisy)}: default family kept, not cached" if noisy else ""
    return f"kernel auto: {families} ({how}){warning}"
