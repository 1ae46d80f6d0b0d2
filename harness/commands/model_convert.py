"""`bitnet-harness model convert`: a local Hugging Face BitNet folder to the GGUF file the engine reads.

The folder is read as it is on disk (config.json, tokenizer.json, safetensors; nothing is downloaded): the
packed BitLinear layout of microsoft/bitnet-b1.58-2B-4T, AutoBitLinear checkpoints, or float master weights
(the -bf16 variant), quantized as bitnet.cpp's converter does. The file gets the official 2B-4T key set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.constants import FORMAT_I2S
from engine.hf_checkpoint import convert_checkpoint
from harness.commands.console import write_with_progress
from harness.commands.options import FormatChoice

DEFAULT_FORMAT = FormatChoice(FORMAT_I2S)


def register(model_app: typer.Typer) -> None:
    """Add `convert` to the `model` command group."""
    model_app.command("convert")(convert_command)


def convert_command(
    folder: Annotated[Path, typer.Argument(help="Hugging Face BitNet folder (config.json, safetensors).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the GGUF file (replaced atomically).")],
    fmt: Annotated[
        FormatChoice, typer.Option("--format", help="Weight format: i2s, tq2_0, tq1_0 or bitnet32.")
    ] = DEFAULT_FORMAT,
) -> None:
    """Convert a local Hugging Face BitNet checkpoint to GGUF (no network)."""
    line = write_with_progress(
        f"convert {folder.name} {fmt.value}",
        lambda progress: convert_checkpoint(folder, out, fmt.value, progress=progress),
    )
    typer.echo(line)
