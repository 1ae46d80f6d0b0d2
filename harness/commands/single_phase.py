"""What `probe` and `timing` share: the model prepared under the resource limits, and the phase's record and
JSON written when asked for."""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from harness.commands.console import ConsoleProgress
from harness.phases.load import LoadedModel
from harness.phases.workload import ModelSource
from harness.runtime.limits import resource_limits
from harness.session.model import check_retune, model_source, ready_model, save_phase_record


@dataclass(frozen=True)
class PhaseModel:
    source: ModelSource
    loaded: LoadedModel
    progress: ConsoleProgress

    def finish(self, phase: str, section: dict[str, Any], receipts_dir: Path | None, as_json: bool) -> bool:
        """Write the phase's record under `receipts_dir` and print JSON when asked; True when JSON was
        printed (nothing more to show)."""
        if receipts_dir is not None:
            record = save_phase_record(receipts_dir, phase, self.loaded.model, self.source, section)
            self.progress.note(f"record: {record}")
        if as_json:
            typer.echo(json.dumps(section, indent=2))
        return as_json


@contextmanager
def phase_model(
    model: Path | None,
    preset: str,
    fmt: str,
    arch: str,
    seed: int,
    kernel: str,
    threads: int | None,
    strict: bool | None,
    limits: tuple[int | None, float | None],
    retune: bool = False,
) -> Iterator[PhaseModel]:
    """The model a single phase runs on, loaded with its kernels ready; the body runs under the limits."""
    check_retune(retune, [kernel])
    progress = ConsoleProgress()
    with resource_limits(*limits):
        source = model_source(model, preset, fmt, arch, seed, progress)
        yield PhaseModel(source, ready_model(source, kernel, threads, strict, progress, retune), progress)
