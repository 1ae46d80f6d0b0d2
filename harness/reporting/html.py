"""`report --html`: one self-contained HTML page of a receipt.

Everything is in the file: styles inline, charts as inline SVG (harness.reporting.svg), no script, no font or
image fetched; a Content-Security-Policy forbids the page any network request. Sections: the verdict and the
headline speeds, the run, host, model, kernels, the latency distribution, the phases, every verification gate,
and the metric's history in the archive (same model, threads and machine as the receipt).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
import pandas as pd

from harness.comparison.metrics import Metric
from harness.machine.fingerprint import machine_of
from harness.receipts.verify import VerificationResult
from harness.reporting import svg
from harness.reporting.gates import STATUS_TEXT, gate_records
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

_STAGES = ("embed", "forward", "logits", "sample")
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;
  background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d5d9e0}
.sub{color:#5a6272;margin:0 0 12px;word-break:break-all}
.verdict{display:inline-block;padding:3px 10px;border-radius:4px;font-weight:600;color:#fff}
.ok{background:#1a7f37}.bad{background:#cf222e}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:10px 14px;min-width:150px}
.card .big{font-size:26px;font-weight:650}.card .what{color:#5a6272;font-size:12px}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d5d9e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.kv th{width:260px}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:700}.not_checked{color:#9a6700}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}
@media(max-width:900px){.grid{grid-template-columns:1fr}}
svg.chart{width:100%;max-width:760px;height:auto;background:#fff;border:1px solid #d5d9e0;
  border-radius:6px}
svg text{font-size:11px;fill:#3b4252}svg .bar{fill:#4c78a8}svg .axis{stroke:#8a93a3}
svg .line{fill:none;stroke:#4c78a8;stroke-width:1.5}svg .band{stroke:#4c78a8;stroke-width:3;opacity:.35}
svg .point{fill:#4c78a8}svg .current{fill:#e45756}
.note{color:#5a6272;font-size:12px}
"""


@dataclass(frozen=True)
class History:
    """The archive's view of the metric: the table `history` shows (or None) and where it came from."""

    table: pd.DataFrame | None
    metric: Metric
    source: str
    note: str = ""


def _cell(value: object, numeric: bool = False) -> str:
    cls = ' class="num"' if numeric else ""
    return f"<td{cls}>{escape(str(value))}</td>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(_cell(v, i in numeric) for i, v in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv(rows: Sequence[tuple[str, object]]) -> str:
    body = "".join(f"<tr><th>{escape(k)}</th>{_cell(v)}</tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _card(value: str, what: str, ident: str = "") -> str:
    attr = f' id="{ident}"' if ident else ""
    return (
        f'<div class="card"><div class="big"{attr}>{escape(value)}</div>'
        f'<div class="what">{escape(what)}</div></div>'
    )


def _repetitions(receipt: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    reps = field(receipt, "phases", "benchmark", "repetitions")
    return [r for r in reps if isinstance(r, Mapping)] if isinstance(reps, list) else []


def _floats(values: object) -> list[float]:
    if not isinstance(values, list):
        return []
    return [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]


def _headline(receipt: Mapping[str, Any], result: VerificationResult) -> str:
    verdict = f'<span class="verdict {"ok" if result.ok else "bad"}">{escape(result.verdict())}</span>'
    ttft = field(receipt, "phases", "benchmark", "summary", "ttft_seconds", "p50")
    prefill = field(receipt, "phases", "benchmark", "summary", "prefill_seconds", "p50")
    prompt = field(receipt, "prompt", "token_count")
    prefill_tps = (
        prompt / prefill if isinstance(prompt, int) and isinstance(prefill, float) and prefill else None
    )
    cards = [
        _card(number(field(receipt, "tokens_per_second"), ".2f"), "decode tok/s", "decode-tok-s"),
        _card(number(prefill_tps, ".2f"), "prefill tok/s (median repetition)"),
        _card(seconds(ttft), "time to first token (p50)"),
        _card(
            seconds(field(receipt, "phases", "benchmark", "summary", "decode_latency_seconds", "p99")),
            "token latency p99",
        ),
        _card(byte_size(field(receipt, "peak_rss_bytes")), "peak RSS"),
    ]
    return f'<p>{verdict}</p><div class="cards">{"".join(cards)}</div>'


def _run(receipt: Mapping[str, Any]) -> str:
    harness = field(receipt, "harness")
    dirty = " (dirty)" if field(harness, "git_dirty") is True else ""
    return _kv(
        [
            (
                "started / finished",
                f"{shown(field(receipt, 'started_at'))} / {shown(field(receipt, 'timestamp'))}",
            ),
            (
                "tokens requested / generated",
                f"{shown(field(receipt, 'tokens_requested'))} / {shown(field(receipt, 'tokens_generated'))}",
            ),
            ("prompt tokens", shown(field(receipt, "prompt", "token_count"))),
            (
                "repetitions (warm-up)",
                f"{len(_repetitions(receipt))} "
                f"({shown(field(receipt, 'phases', 'benchmark', 'warmup_repetitions'))})",
            ),
            ("sampling", shown(field(receipt, "sampling"), 200)),
            ("seed / threads", f"{shown(field(receipt, 'seed'))} / {shown(field(receipt, 'threads'))}"),
            (
                "compute path / backend",
                f"{shown(field(receipt, 'compute_path'))} / {shown(field(receipt, 'backend'))}",
            ),
            (
                "load / JIT",
                f"{seconds(field(receipt, 'load_seconds'))} / {seconds(field(receipt, 'jit_seconds'))}",
            ),
            (
                "read bandwidth, decode floor, ratio to floor",
                ", ".join(
                    number(field(receipt, "bandwidth", k), ".3g")
                    for k in ("read_gbps", "decode_floor_tok_s", "ratio_to_floor")
                ),
            ),
            ("harness", f"{shown(field(harness, 'version'))} {shown(field(harness, 'git_commit'))}{dirty}"),
            ("content digest", shown(field(receipt, "content_digest"))),
        ]
    )


def _host(receipt: Mapping[str, Any]) -> str:
    machine = machine_of(receipt)
    return _kv([*host_facts(receipt), ("machine fingerprint", f"{machine.id} ({machine.label})")])


def _kernels(receipt: Mapping[str, Any]) -> str:
    counts = field(receipt, "kernel_counts")
    counts = counts if isinstance(counts, Mapping) else {}
    listed = field(receipt, "kernels")
    listed = [str(k) for k in listed] if isinstance(listed, list) else []
    variants = field(receipt, "kernel_choice", "variants")
    variants = variants if isinstance(variants, Mapping) else {}
    rows = [
        (
            kid,
            kernel_kind(kid),
            shown(variants.get(kid)),
            number(field(counts.get(kid), "calls"), ","),
            number(field(counts.get(kid), "rows"), ","),
            number(field(counts.get(kid), "elements"), ","),
        )
        for kid in sorted(set(listed) | {str(k) for k in counts})
    ]
    requested = escape(shown(field(receipt, "kernel_choice", "requested")))
    choice = f'<p class="note">kernel choice {requested}; the counters each kernel kept while it ran</p>'
    return choice + _table(
        ("id", "kind", "instruction-set variant", "calls", "rows", "elements"), rows, (3, 4, 5)
    )


def _latency(receipt: Mapping[str, Any]) -> str:
    pooled = [s * 1e3 for r in _repetitions(receipt) for s in _floats(r.get("decode_seconds"))]
    pct = field(receipt, "phases", "benchmark", "summary", "decode_latency_seconds")
    markers = {
        k: float(v) * 1e3 for k in ("p50", "p90", "p99") if isinstance(v := field(pct, k), int | float)
    }
    chart = svg.histogram(pooled, title="decode latency per token", unit="ms", markers=markers)
    per_rep = []
    for i, r in enumerate(_repetitions(receipt)):
        decode = _floats(r.get("decode_seconds"))
        tps = len(decode) / sum(decode) if decode and sum(decode) > 0 else None
        per_rep.append(
            (
                i + 1,
                number(tps, ".2f"),
                seconds(r.get("prefill_seconds")),
                seconds(r.get("ttft_seconds")),
                len(decode),
            )
        )
    table = _table(
        ("repetition", "decode tok/s", "prefill", "time to first token", "decode steps"), per_rep, (1, 4)
    )
    return f'<div class="grid"><div>{chart}</div><div>{table}</div></div>'


def _phases(receipt: Mapping[str, Any]) -> str:
    parts = []
    bench = field(receipt, "phases", "benchmark", "summary")
    if isinstance(bench, Mapping):
        rows = [
            (name, *(seconds(field(bench, name, q)) for q in ("p50", "p90", "p99")))
            for name in ("prefill_seconds", "ttft_seconds", "decode_latency_seconds")
        ]
        parts.append("<h3>Benchmark (phase 3)</h3>" + _table(("measure", "p50", "p90", "p99"), rows))
    timing = field(receipt, "phases", "timing")
    if isinstance(timing, Mapping):
        pct = field(timing, "percentiles")
        stage_bars = [
            (s, float(v) * 1e3) for s in _STAGES if isinstance(v := field(pct, s, "p50"), int | float)
        ]
        rows = [(s, *(seconds(field(pct, s, q)) for q in ("p50", "p90", "p99"))) for s in (*_STAGES, "total")]
        steps = field(timing, "steps")
        layer_lists = [_floats(field(s, "layers")) for s in steps] if isinstance(steps, list) else []
        layers = [
            (f"layer {i}", float(np.median([ls[i] for ls in layer_lists])) * 1e3)
            for i in range(min((len(ls) for ls in layer_lists), default=0))
        ]
        charts = svg.bars(stage_bars, title="decode step stages, p50", unit="ms")
        if layers:
            charts += svg.bars(layers, title="time per layer, median over steps", unit="ms")
        parts.append(
            f"<h3>Timing (phase 2): {len(steps) if isinstance(steps, list) else '-'} decode steps</h3>"
            f'<div class="grid"><div>{charts}</div>'
            f"<div>{_table(('stage', 'p50', 'p90', 'p99'), rows)}</div></div>"
        )
    candidates = field(receipt, "phases", "probe", "candidates")
    if isinstance(candidates, list):
        rows = [
            (
                shown(field(c, "shape")),
                shown(field(c, "kernel")),
                number(field(c, "max_abs_error"), ".3g"),
                number(field(c, "gbps"), ".3g"),
                number(field(c, "gmacs"), ".3g"),
                len(field(c, "seconds") or []),
            )
            for c in candidates
        ]
        tensors = field(receipt, "phases", "probe", "tensors")
        count = len(tensors) if isinstance(tensors, list) else "-"
        parts.append(
            f"<h3>Probe (phase 1): {count} tensors; each kernel family against a float64 reference</h3>"
            + _table(("shape", "kernel", "max abs error", "GB/s", "GMAC/s", "samples"), rows, (2, 3, 4, 5))
        )
    return "".join(parts) or '<p class="note">no phases recorded</p>'


def _verification(result: VerificationResult) -> str:
    rows = []
    for record in gate_records(result):
        detail = "; ".join(f.line() for f in record.findings) if record.findings else record.note
        rows.append((record.title, record.status, detail))
    body = "".join(
        f'<tr><td>{escape(name)}</td><td class="{status}">{escape(STATUS_TEXT[status])}</td>'
        f"<td>{escape(detail)}</td></tr>"
        for name, status, detail in rows
    )
    head = "<thead><tr><th>gate</th><th>status</th><th>detail</th></tr></thead>"
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _history(history: History | None, location: str) -> str:
    if history is None:
        return '<p class="note">no archive given</p>'
    m = history.metric
    intro = (
        f'<p class="note">{escape(m.label)} ({escape(m.unit)}) in {escape(history.source)}: receipts of the '
        "same model, threads and machine, oldest first; the bars are each receipt's noise band (p10-p90). "
        f"{escape(history.note)}</p>"
    )
    table = history.table
    if table is None or table.empty:
        return intro + '<p class="note">no archived receipt matches</p>'
    points = [
        svg.Point(
            f"{row['date']} {row['commit']}",
            float(row["value"]),
            float(row["band low"]),
            float(row["band high"]),
            location.endswith(str(row["file"])),
        )
        for row in table.to_dict("records")
    ]
    rows = [
        (
            row["date"],
            row["commit"],
            f"{row['value']:.4g}",
            f"{row['band low']:.4g} - {row['band high']:.4g}",
            row["n"],
            row["file"],
        )
        for row in table.to_dict("records")
    ]
    chart = svg.series(points, title=f"{m.label} over the archive", unit=m.unit)
    return intro + chart + _table(("date", "commit", "value", "noise band", "n", "file"), rows, (2, 3, 4))


def render_html(
    receipt: Mapping[str, Any], result: VerificationResult, location: str, history: History | None
) -> str:
    """The whole page as text."""
    title = f"bitnet-harness receipt {shown(field(receipt, 'timestamp'))}"
    sections = [
        ("Run", _run(receipt)),
        ("Host", _host(receipt)),
        ("Model", _kv(model_facts(receipt))),
        ("Kernels (execution trace)", _kernels(receipt)),
        ("Latency distribution", _latency(receipt)),
        ("Phases", _phases(receipt)),
        ("Verification", _verification(result)),
        ("History", _history(history, location)),
    ]
    body = "".join(
        f'<section id="{escape(name.split()[0].lower())}"><h2>{escape(name)}</h2>{html}</section>'
        for name, html in sections
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><main><h1>{escape(title)}</h1>"
        f'<p class="sub">{escape(location)}</p>{_headline(receipt, result)}{body}'
        '<p class="note">Written by bitnet-harness report --html; self-contained, no network.</p>'
        "</main></body></html>\n"
    )
