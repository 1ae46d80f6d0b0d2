"""`bench-kernels`: every ternary kernel family and the int8 logits on the 2B-4T shapes, against the floor.

Each kernel runs on random weights of each shape. The cold time is the median of calls made right after a
cache-flushing read of a buffer larger than the cache (what a decode step sees: every weight was last touched
a whole model ago); the warm time is the median of back-to-back calls (the compute ceiling). GB/s counts the
bytes each kernel reads per call; the floor is the read bandwidth measured by this command, not assumed.
"""

import json
import re
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.constants import layer_matrix_shapes
from engine.kernels import bench
from engine.kernels.cpu import has_avx2, has_permw, has_vnni
from engine.model import set_threads
from harness.bandwidth import measure_read_bandwidth
from harness.errors import HarnessError
from harness.options import JsonOpt, ThreadsOpt

FAMILIES = ("i2s", "tq2_0", "tl1", "tl2", "logits")
# 2B-4T: hidden 2560, ffn 6912, 20 query heads and 5 KV heads of 128.
HIDDEN, FFN, Q_DIM, KV_DIM, VOCAB, LAYERS = 2560, 6912, 2560, 640, 128256, 30
DEFAULT_SHAPES = ("2560x2560", "640x2560", "6912x2560", "2560x6912")
err = Console(stderr=True)


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


def decode_estimate(rows: list[dict], bandwidth: float) -> dict | None:
    """Seconds of one 2B-4T decode step's matrix and logits kernels if each ran cold as measured here.

    Only when every layer shape and the logits were measured for the i2s family; compared with the floor
    (all those bytes at the measured bandwidth).
    """
    cold = {(r["name"], r["variant"], tuple(r["shape"])): r for r in rows}
    out = {}
    for variant in sorted({r["variant"] for r in rows if r["name"] == "i2s"}):
        shapes = layer_matrix_shapes(HIDDEN, FFN, Q_DIM, KV_DIM)
        layer = [cold.get(("i2s", variant, tuple(s))) for s in shapes.values()]
        logits = [r for r in rows if r["name"] == "logits" and tuple(r["shape"]) == (VOCAB, HIDDEN)]
        if any(x is None for x in layer) or not logits:
            continue
        best = min(logits, key=lambda r: r["cold_seconds"])
        seconds = LAYERS * sum(x["cold_seconds"] for x in layer) + best["cold_seconds"]
        nbytes = LAYERS * sum(x["bytes"] for x in layer) + best["bytes"]
        out[variant] = {
            "seconds": seconds,
            "tokens_per_s": 1.0 / seconds,
            "bytes": nbytes,
            "floor_tokens_per_s": bandwidth * 1e9 / nbytes,
            "fraction_of_floor": nbytes / seconds / 1e9 / bandwidth,
            "logits_variant": best["variant"],
        }
    return out or None


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
    families = _families(kernels)
    shapes = [_shape(s) for s in (shape or DEFAULT_SHAPES)]
    vocab, hidden = _shape(logits_shape)
    set_threads(threads)
    variants = ["auto", "portable"] if portable else ["auto"]
    with err.status("measuring read bandwidth"):
        bandwidth = measure_read_bandwidth()
    evict = bench.eviction_buffer(evict_mb << 20)
    rows = []
    for family in families:
        for variant in variants:
            if family == "logits":
                with err.status(f"logits {vocab}x{hidden} ({variant})"):
                    rows.append(bench.time_logits(vocab, hidden, repeats, evict, variant).as_dict())
                continue
            for r, c in shapes:
                with err.status(f"{family} {r}x{c} ({variant})"):
                    rows.append(bench.time_matrix(family, r, c, repeats, evict, variant).as_dict())
    for row in rows:
        row["cold_fraction_of_floor"] = row["cold_gb_per_s"] / bandwidth
    result = {
        "bandwidth_gb_per_s": bandwidth,
        "threads": threads,
        "cpu": {"avx512vnni": has_vnni(), "avx512bw": has_permw(), "avx2": has_avx2()},
        "results": rows,
        "decode_estimate": decode_estimate(rows, bandwidth),
    }
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
