"""`bitnet-harness model inspect FILE`: what a GGUF file holds, and whether every tensor is loadable.

Unlike loading, inspecting never stops at the first problem: the whole tensor table is shown with each
tensor's status, and the exit code says whether the file would load (0), holds invalid tensors or an unusable
model (1), or is not a readable GGUF file at all (2).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.config import ModelConfig
from engine.constants import type_name
from engine.errors import EngineError
from engine.flavor import STATUS_INVALID, STATUS_NEAR
from engine.gguf_reader import GGUFFile, read_gguf
from engine.loader import TensorCheck, check_tensors, inventory_problems
from engine.strict import resolve_strict
from harness.commands.options import strict_flag

EXIT_INVALID = 1
EXIT_BAD_INPUT = 2
STATUS_STYLE = {"ok": "green", STATUS_NEAR: "yellow", STATUS_INVALID: "bold red"}


def register(model_app: typer.Typer) -> None:
    """Add `inspect` to the `model` command group."""
    model_app.command("inspect")(inspect_command)


def _summarize_value(value: object) -> object:
    """Metadata for display: long arrays (tokenizer vocabularies) become their length."""
    if isinstance(value, list):
        return value if len(value) <= 8 else {"array_length": len(value)}
    return value


def _model_report(gguf: GGUFFile) -> tuple[ModelConfig | None, list[str], list[str]]:
    """(config, problems, notes); problems hold the config error or the inventory problems."""
    try:
        config = ModelConfig.from_metadata(gguf.metadata, gguf.tensors, gguf.alignment)
    except EngineError as exc:
        return None, [str(exc)], []
    problems, notes = inventory_problems(config, gguf.tensors)
    return config, problems, notes


def _totals(checks: list[TensorCheck]) -> dict[str, object]:
    return {
        "tensors": len(checks),
        "bytes": sum(c.nbytes for c in checks),
        "expected_bytes": sum(c.expected_nbytes or 0 for c in checks),
        "status": dict(Counter(c.status for c in checks)),
        "flavors": dict(Counter(c.flavor for c in checks)),
    }


@dataclass(frozen=True)
class Inspection:
    """What `model inspect` found in one file."""

    gguf: GGUFFile
    checks: list[TensorCheck]
    config: ModelConfig | None
    problems: list[str]
    notes: list[str]
    strict: bool

    @property
    def loadable(self) -> bool:
        return not self.problems and all(c.status != STATUS_INVALID for c in self.checks)


def _json_report(ins: Inspection) -> str:
    gguf, checks, config = ins.gguf, ins.checks, ins.config
    doc = {
        "path": str(gguf.path),
        "version": gguf.version,
        "alignment": gguf.alignment,
        "file_size": gguf.file_size,
        "strict": ins.strict,
        "metadata": {key: _summarize_value(value) for key, value in gguf.metadata.items()},
        "config": None if config is None else asdict(config),
        "problems": ins.problems,
        "notes": ins.notes,
        "tensors": [
            {
                "name": c.name,
                "type": type_name(c.ggml_type),
                "flavor": c.flavor,
                "shape": list(c.shape),
                "bytes": c.nbytes,
                "expected_bytes": c.expected_nbytes,
                "status": c.status,
                "message": c.message,
            }
            for c in checks
        ],
        "totals": _totals(checks),
        "loadable": ins.loadable,
    }
    return json.dumps(doc, indent=2, default=str)


def _print_report(console: Console, ins: Inspection) -> None:
    gguf, checks, config = ins.gguf, ins.checks, ins.config
    summary = Table(title=f"{gguf.path.name}: GGUF v{gguf.version}", show_header=False)
    summary.add_row("file size", f"{gguf.file_size:,} bytes")
    summary.add_row("alignment", str(gguf.alignment))
    summary.add_row("loader mode", "strict" if ins.strict else "permissive")
    summary.add_row("metadata keys", str(len(gguf.metadata)))
    for key in ("general.architecture", "general.name", "general.file_type", "tokenizer.ggml.model"):
        if key in gguf.metadata:
            summary.add_row(key, str(gguf.metadata[key]))
    if config is not None:
        for key, value in asdict(config).items():
            summary.add_row(f"config.{key}", str(value))
    console.print(summary)

    table = Table(title="tensors")
    for column in ("name", "type", "flavor", "shape", "bytes", "expected", "status"):
        justify = "right" if column in ("bytes", "expected") else "left"
        table.add_column(column, justify=justify, overflow="fold")
    for c in checks:
        expected = "-" if c.expected_nbytes is None else f"{c.expected_nbytes:,}"
        status = f"[{STATUS_STYLE[c.status]}]{c.status}[/]"
        table.add_row(
            c.name, type_name(c.ggml_type), c.flavor, str(c.shape), f"{c.nbytes:,}", expected, status
        )
    flavors = Counter(c.flavor for c in checks)
    statuses = Counter(c.status for c in checks)
    table.add_section()
    table.add_row(
        f"{len(checks)} tensors",
        "",
        ", ".join(f"{k} {v}" for k, v in sorted(flavors.items())),
        "",
        f"{sum(c.nbytes for c in checks):,}",
        f"{sum(c.expected_nbytes or 0 for c in checks):,}",
        ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
    )
    console.print(table)
    for c in checks:
        if c.status != "ok":
            console.print(
                f"[{STATUS_STYLE[c.status]}]{c.status}:[/] {c.message}", markup=True, highlight=False
            )
    for note in ins.notes:
        console.print(f"note: {note}", highlight=False)
    for problem in ins.problems:
        console.print(f"[bold red]model:[/] {problem}", highlight=False)


def inspect_command(
    file: Annotated[Path, typer.Argument(help="The GGUF model file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document instead of tables.")] = False,
    strict_loader: Annotated[
        bool,
        typer.Option(
            "--strict-loader", help="Only exact tensor sizes (default: BITNET_STRICT_MODE, else permissive)."
        ),
    ] = False,
) -> None:
    """Show a GGUF file's metadata and every tensor's layout and size check; exit 1 if any is invalid."""
    strict = resolve_strict(strict_flag(strict_loader))
    try:
        gguf = read_gguf(file)
    except EngineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    ins = Inspection(gguf, check_tensors(gguf, strict), *_model_report(gguf), strict)
    if as_json:
        typer.echo(_json_report(ins))
    else:
        _print_report(Console(), ins)
    if not ins.loadable:
        raise typer.Exit(EXIT_INVALID)
