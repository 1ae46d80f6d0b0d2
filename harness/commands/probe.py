"""`probe`: phase 1, the quant probe. What each weight tensor is and which kernel runs it; how every kernel
family does on each shape (agreement with numpy float64, speed)."""

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from harness.commands.options import (
    DEFAULT_ARCH,
    DEFAULT_FORMAT,
    DEFAULT_KERNEL,
    DEFAULT_PRESET,
    ArchOpt,
    FormatOpt,
    JsonOpt,
    KernelOpt,
    MaxMemoryOpt,
    ModelOpt,
    ModelSeedOpt,
    PhaseRecordDirOpt,
    PresetOpt,
    RetuneOpt,
    StrictOpt,
    ThreadsOpt,
    TimeoutOpt,
    strict_flag,
)
from harness.commands.single_phase import phase_model
from harness.phases.probe import run_probe


def register(app: typer.Typer) -> None:
    """Add `probe` to the top-level app."""
    app.command("probe")(probe)


def probe(
    model: ModelOpt = None,
    preset: PresetOpt = DEFAULT_PRESET,
    fmt: FormatOpt = DEFAULT_FORMAT,
    arch: ArchOpt = DEFAULT_ARCH,
    model_seed: ModelSeedOpt = 0,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    retune: RetuneOpt = False,
    strict_loader: StrictOpt = False,
    as_json: JsonOpt = False,
    receipts_dir: PhaseRecordDirOpt = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Phase 1, quant probe: each weight tensor's format and kernel; each kernel's error and speed."""
    args = (model, preset.value, fmt.value, arch.value, model_seed, kernel.value, threads)
    with phase_model(*args, strict_flag(strict_loader), (max_memory, timeout), retune) as run:
        with run.progress.tasks() as board:
            task = board.add_task("probing kernels", total=None)
            section = run_probe(
                run.loaded.model, lambda what: board.update(task, description=f"probing {what}")
            )
        if not run.finish("probe", section, receipts_dir, as_json):
            for table in _probe_tables(section):
                Console().print(table)


def _probe_tables(section: dict[str, Any]) -> list[Table]:
    tensors = Table(title="Phase 1: weight tensors")
    for col in ("tensor", "type", "flavor", "shape", "bytes", "kernel"):
        tensors.add_column(col)
    for row in section["tensors"]:
        shape = "x".join(str(d) for d in row["shape"])
        tensors.add_row(
            row["name"], row["format"], row["flavor"], shape, f"{row['bytes']:,}", row["kernel"] or "-"
        )
    candidates = Table(title="Phase 1: kernel candidates (agreement with numpy float64, speed at the median)")
    for col in ("shape", "kernel", "max abs error", "GB/s", "GMAC/s"):
        candidates.add_column(col, justify="right")
    for row in section["candidates"]:
        shape = "x".join(str(d) for d in row["shape"])
        err_ = f"{row['max_abs_error']:.3g}"
        candidates.add_row(shape, row["kernel"], err_, f"{row['gbps']:.2f}", f"{row['gmacs']:.2f}")
    return [tensors, candidates]
