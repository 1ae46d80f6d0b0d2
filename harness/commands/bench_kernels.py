"""`bench-kernels`: every ternary kernel family and the int8 logits on the 2B-4T shapes, against the floor
(harness.machine.kernel_speeds does the timing)."""

import json
import re
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from harness.commands.console import ConsoleProgress
from harness.commands.options import JsonOpt, ThreadsOpt
from harness.errors import HarnessError
from harness.machine.kernel_speeds import DEFAULT_SHAPES, FAMILIES, HIDDEN, VOCAB, measure_kernels


def register(app: typer.Typer) -> None:
    """Add `bench-kernels` to the top-level app."""
    app.command("bench-kernels")(bench_kernels)


def _shape(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise HarnessError(f"shape {text!r} is not ROWSxCOLS (e.g. 2560x6912)")
    return int(match[1]), int(match[2])


def _families(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in FAMILIES]
    if bad or not names:
        raise HarnessError(f"--kernels takes a comma list of {', '.join(FAMILIES)} (got {text!r})")
    return names


def bench_kernels(
    kernels: Annotated[
        str, typer.Option("--kernels", help=f"Comma list of kernel families: {', '.join(FAMILIES)}.")
    ] = ",".join(FAMILIES),
    shape: Annotated[
        list[str] | None,
        typer.Option("--shape", help="Matrix shape ROWSxCOLS (repeatable; default: the 2B-4T layer shapes)."),
    ] = None,
    logits_shape: Annotated[
        str, typer.Option("--logits-shape", help="VOCABxHIDDEN of the int8 logits.")
    ] = f"{VOCAB}x{HIDDEN}",
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Cold samples per kernel (median).")] = 9,
    portable: Annotated[
        bool, typer.Option("--portable", help="Also time the portable variant of every kernel.")
    ] = False,
    evict_mb: Annotated[
        int, typer.Option("--evict-mb", min=1, help="MB read before every cold sample to flush the caches.")
    ] = 320,
    threads: ThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Time each kernel cold and warm on the 2B-4T shapes: GB/s, GMAC/s, ratio to the read bandwidth."""
    result = measure_kernels(
        _families(kernels),
        [_shape(s) for s in shape] if shape else list(DEFAULT_SHAPES),
        _shape(logits_shape),
        repeats=repeats,
        portable=portable,
        evict_mb=evict_mb,
        threads=threads,
        progress=ConsoleProgress(),
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    _print(result)


def _print(result: dict) -> None:
    out = Console(width=max(Console().width, 132))  # the table's 9 columns need ~130 characters
    bw = result["bandwidth_gb_per_s"]
    table = Table(title=f"bench-kernels (read bandwidth floor {bw:.1f} GB/s, measured)")
    for col in (
        "kernel",
        "variant",
        "shape",
        "MB",
        "cold ms",
        "cold GB/s",
        "of floor",
        "cold GMAC/s",
        "warm GMAC/s",
    ):
        table.add_column(col, justify="left" if col in ("kernel", "variant", "shape") else "right")
    for r in result["results"]:
        table.add_row(
            r["kernel_id"],
            r["variant"],
            "x".join(map(str, r["shape"])),
            f"{r['bytes'] / 1e6:.2f}",
            f"{r['cold_seconds'] * 1e3:.3f}",
            f"{r['cold_gb_per_s']:.1f}",
            f"{r['cold_fraction_of_floor']:.0%}",
            f"{r['cold_gmac_per_s']:.1f}",
            f"{r['warm_gmac_per_s']:.1f}",
        )
    out.print(table)
    for variant, est in (result["decode_estimate"] or {}).items():
        out.print(
            f"2B-4T decode step from these kernels ({variant} matrices, {est['logits_variant']} logits): "
            f"{est['seconds'] * 1e3:.1f} ms = {est['tokens_per_s']:.1f} tok/s; floor "
            f"{est['floor_tokens_per_s']:.1f} tok/s ({est['fraction_of_floor']:.0%} of it)"
        )
