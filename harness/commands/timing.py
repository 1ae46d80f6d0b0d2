"""`timing`: phase 2, per-token latency. After the prompt, decode steps timed stage by stage and by layer."""

from typing import Annotated

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
    PromptOpt,
    PromptTokensOpt,
    RetuneOpt,
    StrictOpt,
    ThreadsOpt,
    TimeoutOpt,
)
from harness.commands.single_phase import finish, phase_request, run_phase
from harness.reporting.receipt import timing_tables


def register(app: typer.Typer) -> None:
    """Add `timing` to the top-level app."""
    app.command("timing")(timing)


def timing(
    model: ModelOpt = None,
    preset: PresetOpt = DEFAULT_PRESET,
    fmt: FormatOpt = DEFAULT_FORMAT,
    arch: ArchOpt = DEFAULT_ARCH,
    model_seed: ModelSeedOpt = 0,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Single-token decode steps to time.")] = 3,
    prompt: PromptOpt = None,
    prompt_tokens: PromptTokensOpt = None,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    retune: RetuneOpt = False,
    strict_loader: StrictOpt = False,
    as_json: JsonOpt = False,
    receipts_dir: PhaseReceiptsDirOpt = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Phase 2, per-token latency: stage times (embed, forward, logits, sample) and per-layer times."""
    request = phase_request("timing", dict(locals()))
    outcome = run_phase(request, (max_memory, timeout))
    finish(outcome, as_json, timing_tables(outcome.section))
