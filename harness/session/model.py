"""The model a command runs, reported as it is prepared: the file (a user's, or a preset written once into
the cache) and the loaded model with its kernels ready."""

from pathlib import Path

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
    source: ModelSource, kernel: str, threads: int | None, strict: bool | None, progress: Progress
) -> LoadedModel:
    """Load the model and compile (or load from numba's cache) every kernel, outside any measured time."""
    with progress.status(f"loading {source.path} and preparing kernels"):
        loaded = load_and_warm(
            source.path,
            kernel=kernel,
            threads=threads,
            strict=strict,
            on_warning=lambda w: progress.note(f"warning: {w}"),
        )
    progress.note(
        f"loaded in {loaded.model.load_seconds:.2f} s; kernels ready in {loaded.jit_seconds:.2f} s "
        "(JIT, not measured)"
    )
    return loaded
