"""Rich terminal report of any receipt; missing or malformed sections show as `-` instead of failing."""

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.receipts.expectations import is_ternary
from harness.receipts.gates.kernels import is_fallback, is_gpu
from harness.receipts.kind import BENCHMARK, receipt_kind
from harness.receipts.verify import VerificationResult

_NOTABLE_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "fma", "f16c", "neon", "asimd")


def _get(obj: object, *keys: str | int) -> Any:
    """obj[k1][k2]... or None when any step is missing or not a container."""
    for key in keys:
        if isinstance(obj, Mapping) and isinstance(key, str):
            obj = obj.get(key)
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return None
    return obj


def _num(value: object, fmt: str = ",.4g") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-" if value is None else str(value)[:80]
    return format(value, fmt)


def _seconds(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _num(value)
    if value < 1e-3:
        return f"{value * 1e6:.1f} us"
    if value < 1:
        return f"{value * 1e3:.2f} ms"
    return f"{value:.3f} s"


def _bytes(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _num(value)
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value} B"


def _text(value: object, limit: int = 100) -> str:
    return "-" if value is None else str(value)[:limit]


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


def _kind(kernel_id: str) -> str:
    if is_gpu(kernel_id):
        return "gpu"
    if is_fallback(kernel_id):
        return "fallback"
    return "ternary" if is_ternary(kernel_id) else "op"


def _kernels_table(receipt: Mapping[str, Any]) -> Table:
    counts = _get(receipt, "kernel_counts")
    counts = counts if isinstance(counts, Mapping) else {}
    listed = _get(receipt, "kernels")
    listed = [str(k) for k in listed] if isinstance(listed, list) else []
    table = Table(title="Kernels (execution trace)", title_justify="left")
    for col in ("id", "kind", "listed", "calls", "rows", "elements"):
        table.add_column(col, justify="right" if col in ("calls", "rows", "elements") else "left")
    for kid in sorted(set(listed) | {str(k) for k in counts}):
        row = counts.get(kid)
        _add_row(
            table,
            kid,
            _kind(kid),
            "yes" if kid in listed else "no",
            _num(_get(row, "calls"), ","),
            _num(_get(row, "rows"), ","),
            _num(_get(row, "elements"), ","),
        )
    return table


def _percentile_row(name: str, pct: object) -> list[str]:
    return [name, _seconds(_get(pct, "p50")), _seconds(_get(pct, "p90")), _seconds(_get(pct, "p99"))]


def _shape(value: object) -> str:
    return "x".join(str(d) for d in value) if isinstance(value, list) else "-"


def probe_tables(section: object, with_tensors: bool = True) -> list[Table]:
    """Phase 1: each weight tensor's format and kernel (`with_tensors`), each kernel family's agreement with
    numpy float64 and its speed per shape."""
    tables = []
    tensors = _get(section, "tensors")
    if with_tensors and isinstance(tensors, list):
        table = Table(title="Probe: weight tensors", title_justify="left")
        for col in ("tensor", "type", "flavor", "shape", "bytes", "kernel"):
            table.add_column(col)
        for row in tensors:
            _add_row(
                table,
                *(_text(_get(row, k)) for k in ("name", "format", "flavor")),
                _shape(_get(row, "shape")),
                _num(_get(row, "bytes"), ","),
                _text(_get(row, "kernel")),
            )
        tables.append(table)
    candidates = _get(section, "candidates")
    if isinstance(candidates, list):
        table = Table(title="Probe: kernel candidates per shape (speed at the median)", title_justify="left")
        for col in ("shape", "kernel", "variant", "max abs error", "GB/s", "GMAC/s", "samples"):
            table.add_column(col)
        for cand in candidates:
            samples = _get(cand, "seconds")
            _add_row(
                table,
                _shape(_get(cand, "shape")),
                _text(_get(cand, "kernel")),
                _text(_get(cand, "variant")),
                _num(_get(cand, "max_abs_error"), ".3g"),
                _num(_get(cand, "gbps"), ".2f"),
                _num(_get(cand, "gmacs"), ".2f"),
                str(len(samples)) if isinstance(samples, list) else "-",
            )
        tables.append(table)
    return tables


def timing_tables(section: object) -> list[Table]:
    """Phase 2: the decode step's stage percentiles, and every layer's time in each step."""
    tables = []
    pct = _get(section, "percentiles")
    steps = _get(section, "steps")
    if isinstance(pct, Mapping):
        count = len(steps) if isinstance(steps, list) else "-"
        table = Table(title=f"Timing: decode step stages over {count} steps", title_justify="left")
        for col in ("stage", "p50", "p90", "p99"):
            table.add_column(col)
        for stage in ("embed", "forward", "logits", "sample", "total"):
            _add_row(table, *_percentile_row(stage, pct.get(stage)))
        tables.append(table)
    layers = [_get(step, "layers") for step in steps] if isinstance(steps, list) else []
    if layers and all(isinstance(row, list) for row in layers):
        table = Table(title="Timing: per-layer time of each step", title_justify="left")
        table.add_column("layer", justify="right")
        for i in range(len(layers)):
            table.add_column(f"step {i + 1}", justify="right")
        for layer in range(max(len(row) for row in layers)):
            cells = [_seconds(row[layer]) if layer < len(row) else "-" for row in layers]
            _add_row(table, str(layer), *cells)
        tables.append(table)
    return tables


def _benchmark_table(bench: Mapping[str, Any]) -> Table:
    reps = bench.get("repetitions")
    table = Table(
        title=Text(
            f"Benchmark: {len(reps) if isinstance(reps, list) else '-'} repetitions, "
            f"{_text(bench.get('warmup_repetitions'))} warm-up"
        ),
        title_justify="left",
    )
    for col in ("measure", "p50", "p90", "p99"):
        table.add_column(col)
    for name in ("prefill_seconds", "ttft_seconds", "decode_latency_seconds"):
        _add_row(table, *_percentile_row(name, _get(bench, "summary", name)))
    return table


def _phase_tables(receipt: Mapping[str, Any]) -> list[Table]:
    """Each phase the receipt holds; the tensor table only in a probe receipt (it is long on real models)."""
    kind = receipt_kind(receipt)
    tables = probe_tables(_get(receipt, "phases", "probe"), with_tensors=kind != BENCHMARK)
    tables += timing_tables(_get(receipt, "phases", "timing"))
    bench = _get(receipt, "phases", "benchmark")
    if isinstance(bench, Mapping):
        tables.append(_benchmark_table(bench))
    return tables


def render(receipt: Mapping[str, Any], console: Console, result: VerificationResult | None = None) -> None:
    """Print the whole report; `result` adds the verification verdict and its failures."""
    title = (
        f"{receipt_kind(receipt)} receipt {_text(_get(receipt, 'schema_version'))}  "
        f"{_text(_get(receipt, 'timestamp'))}  "
        f"compute={_text(_get(receipt, 'compute_path'))}  backend={_text(_get(receipt, 'backend'))}"
    )
    console.rule(Text(title))
    if result is not None:
        color = "green" if result.ok else "red"
        console.print(Text(result.verdict(), style=color))
        for line in result.lines():
            if not line.startswith("NOT CHECKED") or result.ok:
                console.print(Text(f"  {line}"))
    _noise_warning(receipt, console)
    model = _get(receipt, "model")
    console.print(
        _kv_table(
            "Model",
            [
                ("path", _text(_get(model, "path"))),
                ("sha256", _text(_get(model, "sha256"))),
                ("size", _bytes(_get(model, "size_bytes"))),
                (
                    "architecture / format",
                    f"{_text(_get(model, 'architecture'))} / {_text(_get(model, 'format'))}",
                ),
                ("preset (seed)", f"{_text(_get(model, 'preset'))} ({_text(_get(model, 'preset_seed'))})"),
                (
                    "layers / hidden / ffn",
                    " / ".join(_text(_get(model, k)) for k in ("n_layers", "hidden", "ffn")),
                ),
                (
                    "heads / kv heads / head dim",
                    " / ".join(_text(_get(model, k)) for k in ("n_heads", "n_kv_heads", "head_dim")),
                ),
                ("tensors per format", _text(_get(model, "tensors_per_format"), 200)),
            ],
        )
    )
    host = _get(receipt, "host")
    flags = _get(host, "cpu_flags")
    flags = [f for f in _NOTABLE_FLAGS if isinstance(flags, list) and f in flags]
    console.print(
        _kv_table(
            "Host",
            [
                ("cpu", f"{_text(_get(host, 'cpu_model'))} ({_text(_get(host, 'cores'))} cores)"),
                ("notable flags", " ".join(flags) or "-"),
                ("memory", _bytes(_get(host, "memory_bytes"))),
                ("os", _text(_get(host, "os"))),
                (
                    "python / numba / llvmlite / numpy",
                    " / ".join(_text(_get(host, k)) for k in ("python", "numba", "llvmlite", "numpy")),
                ),
                ("threading layer", _text(_get(host, "threading_layer"))),
            ],
        )
    )
    console.print(_kv_table("Run", _run_rows(receipt)))
    console.print(_kernels_table(receipt))
    for table in _phase_tables(receipt):
        console.print(table)
    parity = _get(receipt, "parity")
    if isinstance(parity, Mapping):
        console.print(_kv_table("Parity", _parity_rows(parity)))
    peer = _get(receipt, "peer")
    if isinstance(peer, Mapping):
        console.print(_peer_table(receipt, peer))


def _parity_rows(parity: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The parity section's summary (fields it lacks left out); positions are counted, not listed."""
    rows = [
        (label, _num(_get(parity, key), fmt))
        for label, key, fmt in (
            ("positions compared", "tokens_compared", ",d"),
            ("min cosine", "min_cosine", ".9f"),
            ("mean top-5 overlap", "mean_top5_overlap", ".3f"),
            ("top-1 agreement", "top1_agreement", ".3f"),
            ("max |logit error|", "max_abs_logit_error", ".4g"),
            ("reference median top-1 margin", "median_top1_margin", ".3g"),
        )
        if _get(parity, key) is not None
    ]
    tok, greedy = _get(parity, "tokenizer"), _get(parity, "greedy")
    if isinstance(tok, Mapping):
        n = _text(_get(tok, "strings"))
        ids, text = _text(_get(tok, "ids_identical")), _text(_get(tok, "detokenized_identical"))
        rows.append(("tokenizer", f"{ids}/{n} ids, {text}/{n} detokenized text identical"))
    if isinstance(greedy, Mapping):
        matching, prompts, steps = (_text(_get(greedy, k)) for k in ("matching", "prompts", "steps"))
        divergence = _text(_get(greedy, "first_divergence"))
        rows.append(
            (
                "greedy",
                f"{matching}/{prompts} prompts equal over {steps} steps (first divergence {divergence})",
            )
        )
    return [("reference", _text(_get(parity, "reference"))), *rows]


def _run_rows(receipt: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The run's facts; a phase receipt leaves out the benchmark's rows (and the prompt's if it had none)."""
    harness = _get(receipt, "harness")
    dirty = _get(harness, "git_dirty")
    rows = [
        (
            "tokens_generated",
            "tokens requested / generated",
            " / ".join(_text(_get(receipt, k)) for k in ("tokens_requested", "tokens_generated")),
        ),
        ("tokens_per_second", "decode tokens/s", _num(_get(receipt, "tokens_per_second"), ".2f")),
        ("prompt", "prompt tokens", _text(_get(receipt, "prompt", "token_count"))),
        ("sampling", "sampling", _text(_get(receipt, "sampling"))),
        ("seed", "seed", _text(_get(receipt, "seed"))),
        ("threads", "threads", _text(_get(receipt, "threads"))),
        ("deterministic", "deterministic", _text(_get(receipt, "deterministic"))),
        ("kernel_choice", "kernel choice", _text(_get(receipt, "kernel_choice", "requested"))),
        ("kernel_choice", "kernel variants", _text(_get(receipt, "kernel_choice", "variants"))),
        (
            "load_seconds",
            "load / jit",
            f"{_seconds(_get(receipt, 'load_seconds'))} / {_seconds(_get(receipt, 'jit_seconds'))}",
        ),
        ("peak_rss_bytes", "peak RSS", _bytes(_get(receipt, "peak_rss_bytes"))),
        (
            "bandwidth",
            "bandwidth probes (median GB/s; spread, before/after disagreement)",
            _probes_text(receipt),
        ),
        (
            "bandwidth",
            "bandwidth (GB/s, floor tok/s, ratio)",
            ", ".join(
                _num(_get(receipt, "bandwidth", k), ".3g")
                for k in ("read_gbps", "decode_floor_tok_s", "ratio_to_floor")
            ),
        ),
        (
            "harness",
            "harness",
            f"{_text(_get(harness, 'version'))} {_text(_get(harness, 'git_commit'))}"
            f"{' (dirty)' if dirty is True else ''}",
        ),
    ]
    phase_receipt = receipt_kind(receipt) not in (BENCHMARK, "none")
    return [(label, value) for key, label, value in rows if not phase_receipt or key in receipt]


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _noise_warning(receipt: Mapping[str, Any], console: Console) -> None:
    """A noisy run says so before any figure, with every reason; warnings follow in either case."""
    noise = _get(receipt, "noise")
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
    probes = _get(receipt, "bandwidth", "probes")
    probes = probes if isinstance(probes, list) else []
    medians = " / ".join(_num(_get(p, "median_gbps"), ".3g") for p in probes) or "-"
    spread = _num(_get(receipt, "bandwidth", "spread"), ".1%")
    return f"{medians}; {spread}, {_num(_get(receipt, 'bandwidth', 'disagreement'), '.1%')}"


def _peer_table(receipt: Mapping[str, Any], peer: Mapping[str, Any]) -> Table:
    """This engine beside the peer that ran the same file interleaved with it."""
    prompt_tokens = _get(receipt, "prompt", "token_count")
    table = Table(title=f"Beside {_text(_get(peer, 'engine'))} ({_text(_get(peer, 'version'))}), same file")
    for name in ("", "decode tok/s", "prefill tok/s (median)", "ttft (median)"):
        table.add_column(name, justify="left" if not name else "right")
    for label, bench in (
        ("this engine", _get(receipt, "phases", "benchmark")),
        ("peer", _get(peer, "benchmark")),
    ):
        prefill = _get(bench, "summary", "prefill_seconds", "p50")
        prefill_tps = prompt_tokens / prefill if isinstance(prefill, float) and prefill > 0 else None
        table.add_row(
            label,
            _num(_get(bench, "summary", "tokens_per_second"), ".2f"),
            _num(prefill_tps, ".2f"),
            _seconds(_get(bench, "summary", "ttft_seconds", "p50")),
        )
    table.add_row(
        "ratio (engine / peer)",
        _num(_get(peer, "decode_ratio"), ".2f"),
        _num(_get(peer, "prefill_ratio"), ".2f"),
        "",
    )
    table.caption = f"peer settings: {_text(_get(peer, 'settings'))}"
    return table
