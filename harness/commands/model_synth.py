"""`bitnet-harness model synth`: write a deterministic synthetic model of any preset, format and architecture.

Benchmarks need models of known shape without downloading anything; the same arguments always give the same
bytes, so a receipt naming preset, format, architecture and seed can be reproduced anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.constants import ARCH_BITNET_B158, FORMAT_I2S
from engine.synth import MAX_SEED, synthesize
from harness.commands.console import write_with_progress
from harness.commands.options import ArchChoice, FormatChoice, PresetChoice

DEFAULT_PRESET = PresetChoice("tiny")
DEFAULT_FORMAT = FormatChoice(FORMAT_I2S)
DEFAULT_ARCH = ArchChoice(ARCH_BITNET_B158)


def register(model_app: typer.Typer) -> None:
    """Add `synth` to the `model` command group."""
    model_app.command("synth")(synth_command)


def synth_command(
    out: Annotated[Path, typer.Option("--out", help="Where to write the GGUF file (replaced atomically).")],
    preset: Annotated[PresetChoice, typer.Option("--preset", help="Model shape.")] = DEFAULT_PRESET,
    fmt: Annotated[FormatChoice, typer.Option("--format", help="Weight format.")] = DEFAULT_FORMAT,
    arch: Annotated[ArchChoice, typer.Option("--arch", help="Architecture.")] = DEFAULT_ARCH,
    seed: Annotated[
        int, typer.Option("--seed", min=0, max=MAX_SEED, help="Seed of every tensor's random generator.")
    ] = 0,
) -> None:
    """Write a synthetic model; the same arguments always produce a byte-identical file."""
    preset_name, fmt_name, arch_name = preset.value, fmt.value, arch.value
    line = write_with_progress(
        f"synth {preset_name} {fmt_name}",
        lambda progress: synthesize(preset_name, fmt_name, arch_name, seed, out, progress=progress),
    )
    typer.echo(line)
