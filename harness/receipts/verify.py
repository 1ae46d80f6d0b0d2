"""Receipt verification: the schema first, then honesty gates; every failure is reported, not only the first.

Gates (names as reported):
- schema: every JSON Schema violation (schemas/receipt.v1.0.0.schema.json); past 100, a count of the rest.
- compute_path: must be "real".
- backend: only "cpu" has a kernel registry here.
- ternary_kernel: a cpu receipt needs a ternary kernel id (i2s_, tl1_, tl2_) that is not a fallback.
- gpu_kernels: GPU-named ids (cuda_, cublas_, gemm_, wmma_, a `gpu` name part) cannot run on a cpu receipt.
- known_kernels: ids must be in the engine's registry (engine.trace.KERNEL_IDS).
- kernel_counts: `kernels` and the ids with calls > 0 in `kernel_counts` are the same set.
- kernel_expectations: counters match the model shape and the benchmark workload
  (harness/receipts/expectations.py).
- throughput: tokens_per_second recomputed from the raw decode latencies (1 %).
  A phase receipt (`probe` or `timing` alone, no benchmark phase and no benchmark fields) has no throughput,
  tokens, determinism or replay to check: those gates are reported as skipped (not applicable), and
  kernel_expectations holds its counters against the phase's own work.
- summaries: benchmark and timing percentiles recomputed from their raw samples (1 %); per-layer times fit.
- tokens: tokens_generated equals output_digest.count and the first repetition; none exceeds tokens_requested.
- determinism: a deterministic receipt's repetitions all produced the recorded output.
- timestamps: started_at <= timestamp <= now (+5 min clock skew).
- bandwidth: decode_floor_tok_s and ratio_to_floor follow from their inputs (1 %).
- content_digest: the digest matches the canonical JSON.
- model_hash (with model_path): the file's size and sha256 match the receipt.
- replay (with replay): re-generated tokens have the recorded digest.
When the schema fails, the other gates still run where the data they need is usable and are skipped otherwise.
"""

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from engine.trace import KERNEL_IDS
from harness.errors import HarnessError
from harness.receipts.digest import FileDigest, content_digest, file_digest
from harness.receipts.expectations import (
    Expectation,
    expected_counts,
    is_ternary,
    probe_expectations,
    workload_from_receipt,
)
from harness.receipts.files import parse_timestamp
from harness.receipts.kind import BENCHMARK, receipt_kind
from harness.receipts.schema import schema_errors
from harness.receipts.summary import decode_tokens_per_second, peer_ratios, percentiles

ReplayFn = Callable[[Mapping[str, Any]], str]

REL_TOL = 0.01
ABS_TOL = 1e-9
CLOCK_SKEW = timedelta(minutes=5)
MAX_SCHEMA_FAILURES = 100
_MAX_SHOWN = 300
_FALLBACK_PREFIXES = ("fp32_", "fallback_", "dequant_")
_FALLBACK_SUFFIXES = ("_dequant", "_fallback")
_GPU_PREFIXES = ("cuda_", "cublas_", "gemm_", "wmma_")


@dataclass(frozen=True)
class GateFailure:
    """One failed check: which gate, what it expected, what it found, and what to do about it."""

    gate: str
    expected: str
    found: str
    action: str

    def line(self) -> str:
        return f"FAIL {self.gate}: expected {self.expected}; found {self.found}. {self.action}"


@dataclass
class VerificationResult:
    failures: list[GateFailure] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def schema_ok(self) -> bool:
        """The receipt matched the schema (a writer need not check it again)."""
        return "schema" in self.passed

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.ok,
            "failures": [f.__dict__ for f in self.failures],
            "passed": self.passed,
            "skipped": self.skipped,
        }


def is_fallback(kernel_id: str) -> bool:
    return (
        kernel_id.startswith(_FALLBACK_PREFIXES)
        or kernel_id.endswith(_FALLBACK_SUFFIXES)
        or kernel_id == "matmul_f32"
    )


def is_gpu(kernel_id: str) -> bool:
    return kernel_id.startswith(_GPU_PREFIXES) or "_gpu_" in f"_{kernel_id}_"


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)


class _NotApplicable(Exception):
    """Raised by a gate that has nothing to check on this kind of receipt; the gate is reported skipped."""


def _needs(receipt: Mapping[str, Any], *fields: str) -> None:
    """_NotApplicable when a field is absent: the schema requires the benchmark's fields whenever there is a
    benchmark phase, so their absence marks a phase receipt, which has no such figures to check."""
    if any(f not in receipt for f in fields):
        raise _NotApplicable


@dataclass
class _Context:
    receipt: Mapping[str, Any]
    model_digest: FileDigest | None
    replay: ReplayFn | None
    out: list[GateFailure] = field(default_factory=list)

    def fail(self, gate: str, expected: object, found: object, action: str) -> None:
        self.out.append(GateFailure(gate, _short(expected), _short(found), action))


def _gate_compute_path(c: _Context) -> None:
    if c.receipt["compute_path"] != "real":
        c.fail(
            "compute_path",
            "'real'",
            repr(c.receipt["compute_path"]),
            "Only receipts of the engine's real kernels count; rerun without mock or reference compute.",
        )


def _gate_backend(c: _Context) -> None:
    if c.receipt["backend"] != "cpu":
        c.fail(
            "backend",
            "'cpu'",
            repr(c.receipt["backend"]),
            "This harness has kernel ids for the cpu backend only; other backends cannot be verified here.",
        )


def _gate_ternary_kernel(c: _Context) -> None:
    kernels = c.receipt["kernels"]
    real = [k for k in kernels if is_ternary(k) and not is_fallback(k)]
    if not real:
        c.fail(
            "ternary_kernel",
            "at least one ternary kernel id (i2s_*, tl1_*, tl2_*) that is not a fallback",
            kernels or "no kernels",
            "The run did not execute a ternary matmul; check the kernel choice and the model format.",
        )


def _gate_gpu_kernels(c: _Context) -> None:
    gpu = [k for k in c.receipt["kernels"] if is_gpu(k)]
    if gpu and c.receipt["backend"] == "cpu":
        c.fail(
            "gpu_kernels",
            "no GPU kernel ids on a cpu receipt",
            gpu,
            "GPU kernels cannot run on the cpu backend; this kernel list did not come from the trace.",
        )


def _gate_known_kernels(c: _Context) -> None:
    ids = set(c.receipt["kernels"]) | set(c.receipt["kernel_counts"])
    unknown = sorted(k for k in ids if k not in KERNEL_IDS and not is_gpu(k))
    if unknown:
        c.fail(
            "known_kernels",
            "ids from engine.trace.KERNEL_IDS",
            unknown,
            "Kernel ids must come from the engine's trace; use a harness that knows these ids or rerun.",
        )


# /proc/cpuinfo flags a CPU-specific kernel variant needs (the features engine.kernels.cpu asks LLVM for)
VARIANT_FLAGS = {
    "avx512vnni": ("avx512_vnni", "avx512vl"),
    "avx512bw": ("avx512bw", "avx512vl"),
    "portable": (),
}
LOGITS_KERNELS = ("logits_i8", "fp32_logits")


def _gate_kernel_variants(c: _Context) -> None:
    """Each ternary and logits kernel that ran names its instruction-set path; the host has its features."""
    r = c.receipt
    variants = r["kernel_choice"].get("variants")
    if variants is None:
        return  # receipts written before the field existed
    ran = {k for k, v in r["kernel_counts"].items() if v.get("calls", 0) > 0}
    stray = sorted(set(variants) - ran)
    if stray:
        c.fail(
            "kernel_variants",
            "variants only for kernels that ran",
            stray,
            "kernel_choice.variants must describe the counted kernels (harness.receipts.build).",
        )
    unnamed = sorted(k for k in ran if (is_ternary(k) or k in LOGITS_KERNELS) and k not in variants)
    if unnamed:
        c.fail(
            "kernel_variants",
            "a variant for every ternary and logits kernel that ran",
            unnamed,
            "Record which instruction-set path (or the portable kernel) produced each one.",
        )
    flags = set(r["host"]["cpu_flags"])
    if not flags:
        return  # a host that does not report its flags: nothing to hold the variants against
    for kernel, variant in sorted(variants.items()):
        missing = [f for f in VARIANT_FLAGS.get(variant, ()) if f not in flags]
        if missing:
            c.fail(
                "kernel_variants",
                f"host cpu_flags with {', '.join(VARIANT_FLAGS[variant])} for {kernel} on {variant}",
                f"missing {', '.join(missing)}",
                "This variant cannot have run on this host; the receipt's kernel choice is not its own.",
            )


def _gate_kernel_counts(c: _Context) -> None:
    listed = list(c.receipt["kernels"])
    counts = c.receipt["kernel_counts"]
    not_counted = [k for k in listed if counts.get(k, {}).get("calls", 0) <= 0]
    if not_counted:
        c.fail(
            "kernel_counts",
            "every listed kernel with calls > 0 in kernel_counts",
            f"never counted: {not_counted}",
            "List only kernels the trace saw executing.",
        )
    not_listed = [k for k, v in counts.items() if v["calls"] > 0 and k not in listed]
    if not_listed:
        c.fail(
            "kernel_counts",
            "every counted kernel in kernels",
            f"counted but not listed: {not_listed}",
            "Take `kernels` from the trace snapshot that produced kernel_counts.",
        )
    zero = [k for k, v in counts.items() if v["calls"] <= 0]
    if zero:
        c.fail(
            "kernel_counts",
            "calls > 0 for every kernel_counts entry",
            f"zero calls: {zero}",
            "Record only ids that ran (engine.trace.Trace.snapshot).",
        )


def _gate_kernel_expectations(c: _Context) -> None:
    r = c.receipt
    counts = r["kernel_counts"]
    ids = sorted(set(r["kernels"]) | set(counts))
    kind = receipt_kind(r)
    if kind == "probe":
        _check_expectations(c, probe_expectations(r["phases"]["probe"], ids), "the probe's candidate calls")
        return
    if kind not in (BENCHMARK, "timing"):
        raise _NotApplicable
    work = workload_from_receipt(r)
    int8_logits = counts["logits_i8"]["calls"] if "logits_i8" in counts else 0
    _check_expectations(
        c,
        expected_counts(r["model"], work, ids, int8_logits),
        f"{work.prefill_forwards} prefills of {r['prompt']['token_count']} tokens, {work.decode_steps} "
        f"decode steps of a {r['model']['n_layers']}-layer model",
    )


def _check_expectations(c: _Context, expectations: list[Expectation], work: str) -> None:
    counts = c.receipt["kernel_counts"]
    for exp in expectations:
        for counter, bounds in (("calls", exp.calls), ("rows", exp.rows), ("elements", exp.elements)):
            if bounds is None:
                continue
            total = sum(counts[k][counter] for k in exp.ids if k in counts)
            lo, hi = bounds
            if not lo <= total <= hi:
                want = str(lo) if lo == hi else f"{lo}..{hi}"
                c.fail(
                    "kernel_expectations",
                    f"{exp.group} {counter} {want}",
                    f"{total}",
                    f"Counters must cover exactly the counted work ({work}); see "
                    "harness/receipts/expectations.py.",
                )


def _gate_throughput(c: _Context) -> None:
    r = c.receipt
    bench = r["phases"].get("benchmark")
    if bench is None and receipt_kind(r) != "none":
        _needs(r, "tokens_per_second")  # a phase receipt claims no throughput
    if bench is None:
        c.fail(
            "throughput",
            "phases.benchmark with raw decode latencies",
            "no benchmark phase",
            "A throughput without raw samples cannot be checked; run the benchmark phase.",
        )
        return
    try:
        tps = decode_tokens_per_second(bench["repetitions"])
    except HarnessError as exc:
        c.fail(
            "throughput", "decode latencies with a positive sum", str(exc), "Record real decode latencies."
        )
        return
    for where, value in (
        ("tokens_per_second", r["tokens_per_second"]),
        ("phases.benchmark.summary.tokens_per_second", bench["summary"]["tokens_per_second"]),
    ):
        if not _close(value, tps):
            c.fail(
                "throughput",
                f"{where} = {tps:.6g} (recomputed, within 1 %)",
                f"{value}",
                "Throughput must be decode steps / summed decode latencies (harness.receipts.summary).",
            )


def _check_percentiles(c: _Context, where: str, samples: list[float], recorded: Mapping[str, float]) -> None:
    want = percentiles(samples)
    for key, value in want.items():
        if not _close(recorded[key], value):
            c.fail(
                "summaries",
                f"{where}.{key} = {value:.6g} (recomputed, within 1 %)",
                f"{recorded[key]}",
                "Summaries must be computed from the raw samples with harness.receipts.summary.percentiles.",
            )


def _check_benchmark_summaries(c: _Context, where: str, bench: Mapping[str, Any]) -> None:
    reps, summary = bench["repetitions"], bench["summary"]
    for key in ("prefill_seconds", "ttft_seconds"):
        _check_percentiles(c, f"{where}.summary.{key}", [x[key] for x in reps], summary[key])
    latencies = [s for x in reps for s in x["decode_seconds"]]
    if latencies and summary["decode_latency_seconds"] is not None:
        _check_percentiles(
            c, f"{where}.summary.decode_latency_seconds", latencies, summary["decode_latency_seconds"]
        )
    elif bool(latencies) != (summary["decode_latency_seconds"] is not None):
        c.fail(
            "summaries",
            "decode_latency_seconds null exactly when there are no decode steps",
            f"{len(latencies)} steps, summary {summary['decode_latency_seconds']}",
            "Summaries must describe the recorded samples.",
        )


def _gate_summaries(c: _Context) -> None:
    r = c.receipt
    bench = r["phases"].get("benchmark")
    if bench is not None:
        _check_benchmark_summaries(c, "benchmark", bench)
    timing = r["phases"].get("timing")
    if timing is None:
        return
    steps, pct = timing["steps"], timing["percentiles"]
    for stage in ("embed", "forward", "logits", "sample"):
        _check_percentiles(c, f"timing.percentiles.{stage}", [s[stage] for s in steps], pct[stage])
    totals = [s["embed"] + s["forward"] + s["logits"] + s["sample"] for s in steps]
    _check_percentiles(c, "timing.percentiles.total", totals, pct["total"])
    n_layers = r["model"]["n_layers"]
    for i, step in enumerate(steps):
        if len(step["layers"]) != n_layers:
            c.fail(
                "summaries",
                f"timing.steps[{i}].layers with {n_layers} entries",
                len(step["layers"]),
                "Record one time per layer.",
            )
        elif sum(step["layers"]) > step["forward"] * (1 + REL_TOL) + ABS_TOL:
            c.fail(
                "summaries",
                f"timing.steps[{i}] layer seconds summing to at most forward {step['forward']}",
                sum(step["layers"]),
                "Per-layer times are parts of the forward time.",
            )


def _gate_tokens(c: _Context) -> None:
    r = c.receipt
    _needs(r, "output_digest", "tokens_requested", "tokens_generated")
    digest, requested = r["output_digest"], r["tokens_requested"]
    if r["tokens_generated"] != digest["count"]:
        c.fail(
            "tokens",
            f"tokens_generated = output_digest.count = {digest['count']}",
            r["tokens_generated"],
            "The generated-token count must be the number of ids the output digest covers.",
        )
    if r["tokens_generated"] > requested:
        c.fail(
            "tokens",
            f"tokens_generated <= tokens_requested = {requested}",
            r["tokens_generated"],
            "A run cannot generate more tokens than it asked for.",
        )
    bench = r["phases"].get("benchmark")
    if bench is None:
        return
    reps = bench["repetitions"]
    first = reps[0]
    if first["output_sha256"] != digest["sha256"] or first["tokens_generated"] != digest["count"]:
        c.fail(
            "tokens",
            f"first repetition output {digest['sha256'][:16]}.. ({digest['count']} tokens)",
            f"{first['output_sha256'][:16]}.. ({first['tokens_generated']} tokens)",
            "output_digest must describe the first measured repetition.",
        )
    over = [i for i, x in enumerate(reps) if x["tokens_generated"] > requested]
    if over:
        c.fail(
            "tokens",
            f"every repetition generating <= {requested} tokens",
            f"repetitions {over} exceed it",
            "A run cannot generate more tokens than it asked for.",
        )


def _gate_determinism(c: _Context) -> None:
    r = c.receipt
    _needs(r, "deterministic", "output_digest")
    bench = r["phases"].get("benchmark")
    if not r["deterministic"] or bench is None:
        return
    digest = r["output_digest"]["sha256"]
    differ = [i for i, x in enumerate(bench["repetitions"]) if x["output_sha256"] != digest]
    if differ:
        c.fail(
            "determinism",
            "identical output in every repetition of a deterministic run",
            f"repetitions {differ} differ",
            "Investigate nondeterminism (threads, sampling seed) before trusting it.",
        )


def _gate_timestamps(c: _Context) -> None:
    r = c.receipt
    try:
        started = parse_timestamp(r["started_at"])
        finished = parse_timestamp(r["timestamp"])
    except HarnessError as exc:
        c.fail(
            "timestamps",
            "RFC 3339 timestamps with a time zone",
            str(exc),
            "Write timestamps with utc_timestamp().",
        )
        return
    if started > finished:
        c.fail(
            "timestamps",
            "started_at <= timestamp",
            f"{r['started_at']} > {r['timestamp']}",
            "The run cannot finish before it starts; check the clock and the writer.",
        )
    now = datetime.now(timezone.utc)
    if finished > now + CLOCK_SKEW:
        c.fail(
            "timestamps",
            f"timestamp not in the future (now {now.isoformat()})",
            r["timestamp"],
            "The receipt claims a future time; check the writer's clock.",
        )


def _gate_bandwidth(c: _Context) -> None:
    r = c.receipt
    bw = r.get("bandwidth")
    bench = r["phases"].get("benchmark")
    if bw is None:
        return
    floor = bw["read_gbps"] * 1e9 / bw["weight_bytes_per_token"]
    if not _close(bw["decode_floor_tok_s"], floor):
        c.fail(
            "bandwidth",
            f"decode_floor_tok_s = read_gbps * 1e9 / weight_bytes_per_token = {floor:.6g}",
            bw["decode_floor_tok_s"],
            "Recompute the floor from the measured bandwidth.",
        )
    if bench is None or floor <= 0:
        return
    try:
        ratio = decode_tokens_per_second(bench["repetitions"]) / floor
    except HarnessError:
        return
    if not _close(bw["ratio_to_floor"], ratio):
        c.fail(
            "bandwidth",
            f"ratio_to_floor = tokens_per_second / floor = {ratio:.6g}",
            bw["ratio_to_floor"],
            "Recompute the ratio from the measured throughput.",
        )


def _gate_peer(c: _Context) -> None:
    """The peer's figures: the same file and threads, summaries and ratios recomputed from its raw samples."""
    r = c.receipt
    peer = r.get("peer")
    if peer is None:
        return
    if peer["model_sha256"] != r["model"]["sha256"]:
        c.fail(
            "peer",
            f"peer.model_sha256 = model.sha256 ({r['model']['sha256']})",
            peer["model_sha256"],
            "A speed ratio means something only when both engines ran the same file.",
        )
    if peer["threads"] != r["threads"]:
        c.fail(
            "peer",
            f"peer.threads = threads = {r['threads']}",
            peer["threads"],
            "Run both with one thread count.",
        )
    bench, engine_bench = peer["benchmark"], r["phases"].get("benchmark")
    _check_benchmark_summaries(c, "peer.benchmark", bench)
    tps = decode_tokens_per_second(bench["repetitions"])
    if not _close(bench["summary"]["tokens_per_second"], tps):
        c.fail(
            "peer",
            f"peer.benchmark.summary.tokens_per_second = {tps:.6g} (recomputed)",
            bench["summary"]["tokens_per_second"],
            "Throughput must be decode steps / summed decode latencies (harness.receipts.summary).",
        )
    if engine_bench is None:
        c.fail("peer", "phases.benchmark beside the peer's", "none", "A ratio needs the engine's own run.")
        return
    try:
        want = peer_ratios(engine_bench["repetitions"], bench["repetitions"])
    except HarnessError as exc:
        c.fail("peer", "decode steps and prefill times on both sides", str(exc), "Record real timings.")
        return
    for key, value in want.items():
        if not _close(peer[key], value):
            c.fail(
                "peer",
                f"peer.{key} = {value:.6g} (recomputed)",
                peer[key],
                "Recompute it from the raw samples.",
            )


def _gate_content_digest(c: _Context) -> None:
    want = content_digest(c.receipt)
    if c.receipt["content_digest"] != want:
        c.fail(
            "content_digest",
            want,
            c.receipt["content_digest"],
            "The receipt was changed after it was finalized; do not trust its contents.",
        )


def _gate_model_hash(c: _Context) -> None:
    if c.model_digest is None:
        return
    size, digest = c.model_digest
    model = c.receipt["model"]
    if model["size_bytes"] != size:
        c.fail(
            "model_hash",
            f"{size} bytes (the file given)",
            f"model.size_bytes = {model['size_bytes']}",
            "This receipt was made with a different model file.",
        )
    if model["sha256"] != digest:
        c.fail(
            "model_hash",
            f"sha256 {digest} (the file given)",
            f"model.sha256 = {model['sha256']}",
            "This receipt was made with a different model file.",
        )


def _gate_replay(c: _Context) -> None:
    if c.replay is None:
        return
    _needs(c.receipt, "output_digest")
    got = c.replay(c.receipt)
    want = c.receipt["output_digest"]["sha256"]
    if got != want:
        c.fail(
            "replay",
            f"re-generated tokens with digest {want}",
            got,
            "The engine does not reproduce the recorded output; the receipt or the engine changed.",
        )


_GATES: tuple[tuple[str, Callable[[_Context], None]], ...] = (
    ("compute_path", _gate_compute_path),
    ("backend", _gate_backend),
    ("ternary_kernel", _gate_ternary_kernel),
    ("gpu_kernels", _gate_gpu_kernels),
    ("known_kernels", _gate_known_kernels),
    ("kernel_counts", _gate_kernel_counts),
    ("kernel_variants", _gate_kernel_variants),
    ("kernel_expectations", _gate_kernel_expectations),
    ("throughput", _gate_throughput),
    ("summaries", _gate_summaries),
    ("tokens", _gate_tokens),
    ("determinism", _gate_determinism),
    ("timestamps", _gate_timestamps),
    ("bandwidth", _gate_bandwidth),
    ("peer", _gate_peer),
    ("content_digest", _gate_content_digest),
    ("model_hash", _gate_model_hash),
    ("replay", _gate_replay),
)
_UNUSABLE_DATA = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError, HarnessError)


def verify(
    receipt_obj: object,
    *,
    model_path: str | Path | None = None,
    model_digest: FileDigest | None = None,
    replay: ReplayFn | None = None,
) -> VerificationResult:
    """Check a parsed receipt; `replay(receipt) -> sha256 hex` re-generates its tokens (engine side).

    The model_hash gate holds the receipt against the file at `model_path`, or against `model_digest` when
    the caller has just hashed that file (a benchmark hashes its model once per run). Raises HarnessError only
    for an unusable model file; every problem with the receipt is a reported failure.
    """
    if model_path is not None and model_digest is not None:
        raise ValueError("give the model file or its digest, not both")
    result = VerificationResult()
    if model_path is not None:
        model_digest = file_digest(model_path)
    errors = schema_errors(receipt_obj)
    for path, message in errors[:MAX_SCHEMA_FAILURES]:
        result.failures.append(
            GateFailure(
                "schema",
                "a receipt matching receipt schema 1.0.0",
                _short(f"{path}: {message}"),
                "Write receipts with harness.receipts.files; fix or regenerate this one.",
            )
        )
    if len(errors) > MAX_SCHEMA_FAILURES:
        result.failures.append(
            GateFailure(
                "schema",
                "a receipt matching receipt schema 1.0.0",
                f"{len(errors) - MAX_SCHEMA_FAILURES} more schema errors not listed",
                "This file is far from a receipt; regenerate it.",
            )
        )
    if not errors:
        result.passed.append("schema")
    not_run = {"model_hash": model_digest is None, "replay": replay is None or bool(errors)}
    for name, gate in _GATES:
        if not_run.get(name, False) or not isinstance(receipt_obj, Mapping):
            result.skipped.append(name)
            continue
        ctx = _Context(receipt_obj, model_digest, replay)
        try:
            gate(ctx)
        except _NotApplicable:
            result.skipped.append(name)
            continue
        except _UNUSABLE_DATA:
            if not errors:
                raise
            result.skipped.append(name)
            continue
        result.failures.extend(ctx.out)
        if not ctx.out:
            result.passed.append(name)
    return result
