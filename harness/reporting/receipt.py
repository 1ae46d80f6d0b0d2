"""Rich terminal report of any receipt; missing or malformed sections show as `-` instead of failing."""

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.receipts.verify import VerificationResult
from harness.reporting.values import (
    byte_size,
    field,
    host_facts,
    kernel_kind,
    model_facts,
    number,
    seconds,
    shown,
)


def _add_row(table: Table, *cells: str) -> None:
    """Cells as plain text: receipt contents are never interpreted as rich markup."""
    table.add_row(*(Text(cell) for cell in cells))


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in rows:
        _add_row(table, key, value)
    return table


def _kernels_table(receipt: Mapping[str, Any]) -> Table:
    counts = field(receipt, "kernel_counts")
    counts = counts if isinstance(counts, Mapping) else {}
    listed = field(receipt, "kernels")
    listed = [str(k) for k in listed] if isinstance(listed, list) else []
    table = Table(title="Kernels (execution trace)", title_justify="left")
    for col in ("id", "kind", "listed", "calls", "rows", "elements"):
        table.add_column(col, justify="right" if col in ("calls", "rows", "elements") else "left")
    for kid in sorted(set(listed) | {str(k) for k in counts}):
        row = counts.get(kid)
        _add_row(
            table,
            kid,
            kernel_kind(kid),
            "yes" if kid in listed else "no",
            number(field(row, "calls"), ","),
            number(field(row, "rows"), ","),
            number(field(row, "elements"), ","),
        )
    return table


def _percentile_row(name: str, pct: object) -> list[str]:
    return [name, seconds(field(pct, "p50")), seconds(field(pct, "p90")), seconds(field(pct, "p99"))]


def _phase_tables(receipt: Mapping[str, Any]) -> list[Table]:
    tables = []
    candidates = field(receipt, "phases", "probe", "candidates")
    if isinstance(candidates, list):
        table = Table(title="Probe: kernel candidates per shape", title_justify="left")
        for col in ("shape", "kernel", "max abs error", "GB/s", "GMAC/s", "samples"):
            table.add_column(col)
        for cand in candidates:
            samples = field(cand, "seconds")
            _add_row(
                table,
                shown(field(cand, "shape")),
                shown(field(cand, "kernel")),
                number(field(cand, "max_abs_error"), ".3g"),
                number(field(cand, "gbps"), ".2f"),
                number(field(cand, "gmacs"), ".2f"),
                str(len(samples)) if isinstance(samples, list) else "-",
            )
        tables.append(table)
    timing = field(receipt, "phases", "timing", "percentiles")
    if isinstance(timing, Mapping):
        table = Table(title="Timing: decode step stages", title_justify="left")
        for col in ("stage", "p50", "p90", "p99"):
            table.add_column(col)
        for stage in ("embed", "forward", "logits", "sample", "total"):
            _add_row(table, *_percentile_row(stage, timing.get(stage)))
        tables.append(table)
    bench = field(receipt, "phases", "benchmark")
    if isinstance(bench, Mapping):
        reps = bench.get("repetitions")
        table = Table(
            title=Text(
                f"Benchmark: {len(reps) if isinstance(reps, list) else '-'} repetitions, "
                f"{shown(bench.get('warmup_repetitions'))} warm-up"
            ),
            title_justify="left",
        )
        for col in ("measure", "p50", "p90", "p99"):
            table.add_column(col)
        for name in ("prefill_seconds", "ttft_seconds", "decode_latency_seconds"):
            _add_row(table, *_percentile_row(name, field(bench, "summary", name)))
        tables.append(table)
    return tables


def render(receipt: Mapping[str, Any], console: Console, result: VerificationResult | None = None) -> None:
    """Print the whole report; `result` adds the verification verdict and its failures."""
    title = (
        f"receipt {shown(field(receipt, 'schema_version'))}  {shown(field(receipt, 'timestamp'))}  "
        f"compute={shown(field(receipt, 'compute_path'))}  backend={shown(field(receipt, 'backend'))}"
    )
    console.rule(Text(title))
    if result is not None:
        if result.ok:
            console.print(f"[green]VALID[/green]: {len(result.passed)} gates passed")
        else:
            console.print(f"[red]INVALID[/red]: {len(result.failures)} failures")
            for failure in result.failures:
                console.print(f"  {failure.line()}", markup=False)
    console.print(_kv_table("Model", model_facts(receipt)))
    console.print(_kv_table("Host", host_facts(receipt)))
    harness = field(receipt, "harness")
    dirty = field(harness, "git_dirty")
    console.print(
        _kv_table(
            "Run",
            [
                (
                    "tokens requested / generated",
                    " / ".join(shown(field(receipt, k)) for k in ("tokens_requested", "tokens_generated")),
                ),
                ("decode tokens/s", number(field(receipt, "tokens_per_second"), ".2f")),
                ("prompt tokens", shown(field(receipt, "prompt", "token_count"))),
                ("sampling", shown(field(receipt, "sampling"))),
                ("seed / threads", f"{shown(field(receipt, 'seed'))} / {shown(field(receipt, 'threads'))}"),
                ("deterministic", shown(field(receipt, "deterministic"))),
                ("kernel choice", shown(field(receipt, "kernel_choice", "requested"))),
                ("kernel variants", shown(field(receipt, "kernel_choice", "variants"))),
                (
                    "load / jit",
                    f"{seconds(field(receipt, 'load_seconds'))} / {seconds(field(receipt, 'jit_seconds'))}",
                ),
                ("peak RSS", byte_size(field(receipt, "peak_rss_bytes"))),
                (
                    "bandwidth (GB/s, floor tok/s, ratio)",
                    ", ".join(
                        number(field(receipt, "bandwidth", k), ".3g")
                        for k in ("read_gbps", "decode_floor_tok_s", "ratio_to_floor")
                    ),
                ),
                (
                    "harness",
                    f"{shown(field(harness, 'version'))} {shown(field(harness, 'git_commit'))}"
                    f"{' (dirty)' if dirty is True else ''}",
                ),
            ],
        )
    )
    console.print(_kernels_table(receipt))
    for table in _phase_tables(receipt):
        console.print(table)
    parity = field(receipt, "parity")
    if isinstance(parity, Mapping):
        console.print(_kv_table("Parity", [(str(k), shown(v)) for k, v in parity.items()]))
    peer = field(receipt, "peer")
    if isinstance(peer, Mapping):
        console.print(_peer_table(receipt, peer))


def _peer_table(receipt: Mapping[str, Any], peer: Mapping[str, Any]) -> Table:
    """This engine beside the peer that ran the same file interleaved with it."""
    prompt_tokens = field(receipt, "prompt", "token_count")
    table = Table(title=f"Beside {shown(field(peer, 'engine'))} ({shown(field(peer, 'version'))}), same file")
    for name in ("", "decode tok/s", "prefill tok/s (median)", "ttft (median)"):
        table.add_column(name, justify="left" if not name else "right")
    for label, bench in (
        ("this engine", field(receipt, "phases", "benchmark")),
        ("peer", field(peer, "benchmark")),
    ):
        prefill = field(bench, "summary", "prefill_seconds", "p50")
        prefill_tps = prompt_tokens / prefill if isinstance(prefill, float) and prefill > 0 else None
        table.add_row(
            label,
            number(field(bench, "summary", "tokens_per_second"), ".2f"),
            number(prefill_tps, ".2f"),
            seconds(field(bench, "summary", "ttft_seconds", "p50")),
        )
    table.add_row(
        "ratio (engine / peer)",
        number(field(peer, "decode_ratio"), ".2f"),
        number(field(peer, "prefill_ratio"), ".2f"),
        "",
    )
    table.caption = f"peer settings: {shown(field(peer, 'settings'))}"
    return table
