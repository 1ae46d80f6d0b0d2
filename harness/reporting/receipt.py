"""Rich terminal report of any receipt; missing or malformed sections show as `-` instead of failing."""

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.receipts.kind import BENCHMARK, receipt_kind
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


def _shape(value: object) -> str:
    return "x".join(str(d) for d in value) if isinstance(value, list) else "-"


def probe_tables(section: object, with_tensors: bool = True) -> list[Table]:
    """Phase 1: each weight tensor's format and kernel (`with_tensors`), each kernel family's agreement with
    numpy float64 and its speed per shape."""
    tables = []
    tensors = field(section, "tensors")
    if with_tensors and isinstance(tensors, list):
        table = Table(title="Probe: weight tensors", title_justify="left")
        for col in ("tensor", "type", "flavor", "shape", "bytes", "kernel"):
            table.add_column(col)
        for row in tensors:
            _add_row(
                table,
                *(shown(field(row, k)) for k in ("name", "format", "flavor")),
                _shape(field(row, "shape")),
                number(field(row, "bytes"), ","),
                shown(field(row, "kernel")),
            )
        tables.append(table)
    candidates = field(section, "candidates")
    if isinstance(candidates, list):
        table = Table(title="Probe: kernel candidates per shape (speed at the median)", title_justify="left")
        for col in ("shape", "kernel", "variant", "max abs error", "GB/s", "GMAC/s", "samples"):
            table.add_column(col)
        for cand in candidates:
            samples = field(cand, "seconds")
            _add_row(
                table,
                _shape(field(cand, "shape")),
                shown(field(cand, "kernel")),
                shown(field(cand, "variant")),
                number(field(cand, "max_abs_error"), ".3g"),
                number(field(cand, "gbps"), ".2f"),
                number(field(cand, "gmacs"), ".2f"),
                str(len(samples)) if isinstance(samples, list) else "-",
            )
        tables.append(table)
    return tables


def timing_tables(section: object) -> list[Table]:
    """Phase 2: the decode step's stage percentiles, and every layer's time in each step."""
    tables = []
    pct = field(section, "percentiles")
    steps = field(section, "steps")
    if isinstance(pct, Mapping):
        count = len(steps) if isinstance(steps, list) else "-"
        table = Table(title=f"Timing: decode step stages over {count} steps", title_justify="left")
        for col in ("stage", "p50", "p90", "p99"):
            table.add_column(col)
        for stage in ("embed", "forward", "logits", "sample", "total"):
            _add_row(table, *_percentile_row(stage, pct.get(stage)))
        tables.append(table)
    layers = [field(step, "layers") for step in steps] if isinstance(steps, list) else []
    if layers and all(isinstance(row, list) for row in layers):
        table = Table(title="Timing: per-layer time of each step", title_justify="left")
        table.add_column("layer", justify="right")
        for i in range(len(layers)):
            table.add_column(f"step {i + 1}", justify="right")
        for layer in range(max(len(row) for row in layers)):
            cells = [seconds(row[layer]) if layer < len(row) else "-" for row in layers]
            _add_row(table, str(layer), *cells)
        tables.append(table)
    return tables


def _benchmark_table(bench: Mapping[str, Any]) -> Table:
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
    return table


def _phase_tables(receipt: Mapping[str, Any]) -> list[Table]:
    """Each phase the receipt holds; the tensor table only in a probe receipt (it is long on real models)."""
    kind = receipt_kind(receipt)
    tables = probe_tables(field(receipt, "phases", "probe"), with_tensors=kind != BENCHMARK)
    tables += timing_tables(field(receipt, "phases", "timing"))
    bench = field(receipt, "phases", "benchmark")
    if isinstance(bench, Mapping):
        tables.append(_benchmark_table(bench))
    return tables


def render(receipt: Mapping[str, Any], console: Console, result: VerificationResult | None = None) -> None:
    """Print the whole report; `result` adds the verification verdict and its failures."""
    title = (
        f"{receipt_kind(receipt)} receipt {shown(field(receipt, 'schema_version'))}  "
        f"{shown(field(receipt, 'timestamp'))}  "
        f"compute={shown(field(receipt, 'compute_path'))}  backend={shown(field(receipt, 'backend'))}"
    )
    console.rule(Text(title))
    if result is not None:
        color = "green" if result.ok else "red"
        console.print(Text(result.verdict(), style=color))
        for line in result.lines():
            if not line.startswith("NOT CHECKED") or result.ok:
                console.print(Text(f"  {line}"))
    _noise_warning(receipt, console)
    console.print(_kv_table("Model", model_facts(receipt)))
    console.print(_kv_table("Host", host_facts(receipt)))
    console.print(_kv_table("Run", _run_rows(receipt)))
    console.print(_kernels_table(receipt))
    for table in _phase_tables(receipt):
        console.print(table)
    parity = field(receipt, "parity")
    if isinstance(parity, Mapping):
        console.print(_kv_table("Parity", _parity_rows(parity)))
    peer = field(receipt, "peer")
    if isinstance(peer, Mapping):
        console.print(_peer_table(receipt, peer))


def _parity_rows(parity: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The parity section's summary (fields it lacks left out); positions are counted, not listed."""
    rows = [
        (label, number(field(parity, key), fmt))
        for label, key, fmt in (
            ("positions compared", "tokens_compared", ",d"),
            ("min cosine", "min_cosine", ".9f"),
            ("mean top-5 overlap", "mean_top5_overlap", ".3f"),
            ("top-1 agreement", "top1_agreement", ".3f"),
            ("max |logit error|", "max_abs_logit_error", ".4g"),
            ("reference median top-1 margin", "median_top1_margin", ".3g"),
        )
        if field(parity, key) is not None
    ]
    tok, greedy = field(parity, "tokenizer"), field(parity, "greedy")
    if isinstance(tok, Mapping):
        n = shown(field(tok, "strings"))
        ids, text = shown(field(tok, "ids_identical")), shown(field(tok, "detokenized_identical"))
        rows.append(("tokenizer", f"{ids}/{n} ids, {text}/{n} detokenized text identical"))
    if isinstance(greedy, Mapping):
        matching, prompts, steps = (shown(field(greedy, k)) for k in ("matching", "prompts", "steps"))
        divergence = shown(field(greedy, "first_divergence"))
        rows.append(
            (
                "greedy",
                f"{matching}/{prompts} prompts equal over {steps} steps (first divergence {divergence})",
            )
        )
    return [("reference", shown(field(parity, "reference"))), *rows]


def _run_rows(receipt: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run's facts; a phase receipt leaves out the benchmark's rows (and the prompt's if it had none)."""
    harness = field(receipt, "harness")
    dirty = field(harness, "git_dirty")
    rows = [
        (
            "tokens_generated",
            "tokens requested / generated",
            " / ".join(shown(field(receipt, k)) for k in ("tokens_requested", "tokens_generated")),
        ),
        ("tokens_per_second", "decode tokens/s", number(field(receipt, "tokens_per_second"), ".2f")),
        ("prompt", "prompt tokens", shown(field(receipt, "prompt", "token_count"))),
        ("sampling", "sampling", shown(field(receipt, "sampling"))),
        ("seed", "seed", shown(field(receipt, "seed"))),
        ("threads", "threads", shown(field(receipt, "threads"))),
        ("deterministic", "deterministic", shown(field(receipt, "deterministic"))),
        ("kernel_choice", "kernel choice", shown(field(receipt, "kernel_choice", "requested"))),
        ("kernel_choice", "kernel variants", shown(field(receipt, "kernel_choice", "variants"))),
        (
            "load_seconds",
            "load / jit",
            f"{seconds(field(receipt, 'load_seconds'))} / {seconds(field(receipt, 'jit_seconds'))}",
        ),
        ("peak_rss_bytes", "peak RSS", byte_size(field(receipt, "peak_rss_bytes"))),
        (
            "bandwidth",
            "bandwidth probes (median GB/s; spread, before/after disagreement)",
            _probes_text(receipt),
        ),
        (
            "bandwidth",
            "bandwidth (GB/s, floor tok/s, ratio)",
            ", ".join(
                number(field(receipt, "bandwidth", k), ".3g")
                for k in ("read_gbps", "decode_floor_tok_s", "ratio_to_floor")
            ),
        ),
        (
            "harness",
            "harness",
            f"{shown(field(harness, 'version'))} {shown(field(harness, 'git_commit'))}"
            f"{' (dirty)' if dirty is True else ''}",
        ),
    ]
    phase_receipt = receipt_kind(receipt) not in (BENCHMARK, "none")
    return [(label, value) for key, label, value in rows if not phase_receipt or key in receipt]


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _noise_warning(receipt: Mapping[str, Any], console: Console) -> None:
    """A noisy run says so before any figure, with every reason; warnings follow in either case."""
    noise = field(receipt, "noise")
    if not isinstance(noise, Mapping):
        return
    if noise.get("noisy") is True:
        console.print(
            "[yellow]WARNING: noisy run[/yellow]: its timings are unreliable; compare calls them inconclusive"
        )
        for reason in _strings(noise.get("reasons")):
            console.print(Text(f"  - {reason}"))
    for warning in _strings(noise.get("warnings")):
        console.print(Text(f"  note: {warning}"))


def _probes_text(receipt: Mapping[str, Any]) -> str:
    """Each bandwidth probe's median, then the spread of all passes and the before/after disagreement."""
    probes = field(receipt, "bandwidth", "probes")
    probes = probes if isinstance(probes, list) else []
    medians = " / ".join(number(field(p, "median_gbps"), ".3g") for p in probes) or "-"
    spread = number(field(receipt, "bandwidth", "spread"), ".1%")
    return f"{medians}; {spread}, {number(field(receipt, 'bandwidth', 'disagreement'), '.1%')}"


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
