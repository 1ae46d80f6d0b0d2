"""`timing`: phase 2, per-token latency. After the prompt, decode steps timed stage by stage and by layer."""

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from engine.generate import SamplingParams
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
    PromptOpt,
    PromptTokensOpt,
    RetuneOpt,
    StrictOpt,
    ThreadsOpt,
    TimeoutOpt,
    strict_flag,
)
from harness.commands.single_phase import phase_model
from harness.phases.timing import run_timing
from harness.phases.workload import DEFAULT_PROMPT, prompt_ids


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
    receipts_dir: PhaseRecordDirOpt = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Phase 2, per-token latency: stage times (embed, forward, logits, sample) and per-layer times."""
    args = (model, preset.value, fmt.value, arch.value, model_seed, kernel.value, threads)
    with phase_model(*args, strict_flag(strict_loader), (max_memory, timeout), retune) as run:
        ids = prompt_ids(run.loaded.model.tokenizer, prompt or DEFAULT_PROMPT, prompt_tokens)
        section = run_timing(run.loaded.model, ids, steps, SamplingParams())
        if not run.finish("timing", section, receipts_dir, as_json):
            for table in _timing_tables(section, steps):
                Console().print(table)


def _timing_tables(section: dict[str, Any], steps: int) -> list[Table]:
    table = Table(title=f"Phase 2: decode step latency over {steps} steps (ms)")
    for col in ("stage", "p50", "p90", "p99"):
        table.add_column(col, justify="right")
    for stage, pct in section["percentiles"].items():
        table.add_row(stage, *(f"{pct[p] * 1e3:.3f}" for p in ("p50", "p90", "p99")))
    layers = Table(title="Phase 2: per-layer time of each step (ms)")
    layers.add_column("layer", justify="right")
    for i in range(len(section["steps"])):
        layers.add_column(f"step {i + 1}", justify="right")
    for layer in range(len(section["steps"][0]["layers"])):
        layers.add_row(str(layer), *(f"{step['layers'][layer] * 1e3:.3f}" for step in section["steps"]))
    return [table, layers]
