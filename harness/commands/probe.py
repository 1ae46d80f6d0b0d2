"""`probe`: phase 1, the quant probe. What each weight tensor is and which kernel runs it; how every kernel
family does on each shape (agreement with numpy float64, speed)."""

import typer

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
    PhaseReceiptsDirOpt,
    PresetOpt,
    RetuneOpt,
    StrictOpt,
    ThreadsOpt,
    TimeoutOpt,
)
from harness.commands.single_phase import finish, phase_request, run_phase
from harness.reporting.receipt import probe_tables


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
    receipts_dir: PhaseReceiptsDirOpt = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Phase 1, quant probe: each weight tensor's format and kernel; each kernel's error and speed."""
    request = phase_request("probe", dict(locals()))
    outcome = run_phase(request, (max_memory, timeout))
    finish(outcome, as_json, probe_tables(outcome.section))
