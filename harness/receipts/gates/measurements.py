"""Gates on what was measured: the raw samples, their summaries, and whether physics allows them.

Arithmetic gates recompute every derived figure from the raw samples (1 %). Physical gates hold the samples
against what a machine can do: a latency floor, the wall clock between the receipt's two timestamps, the
memory-bandwidth floor of decode, the decode step the timing phase measured, and the weight bytes a shape
must read.
"""

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from engine.constants import ARCH_BITNET, FORMAT_TQ1_0, FORMAT_TQ2_0, WEIGHT_FORMATS
from harness.errors import HarnessError
from harness.machine.bandwidth import DISAGREEMENT_LIMIT, LLC_MULTIPLE, MIN_PROBE_BYTES, Floor, Probe
from harness.receipts.checks import ABS_TOL, REL_TOL, Check, close
from harness.receipts.digest import content_digest
from harness.receipts.expectations import MATMULS_PER_LAYER, format_kernels, matrix_shapes
from harness.receipts.files import parse_timestamp
from harness.receipts.kind import receipt_kind
from harness.receipts.summary import decode_tokens_per_second, peer_ratios, percentiles
from harness.version import harness_version

CLOCK_SKEW = timedelta(minutes=5)
LATENCY_FLOOR = 1e-6  # no forward pass, prefill or kernel call of this engine takes less than a microsecond
MIN_PEAK_RSS = 16 << 20  # a Python process with numpy and numba loaded is larger
FLOOR_TOLERANCE = 1.15  # decode may beat the bandwidth floor by this factor (see docs/verification.md)
TIMING_TOLERANCE = 1.5  # the benchmark's median decode step may beat the fastest timing step by this factor
# ... plus this many seconds: the timing phase's own timers (per stage and per layer) and its few steps right
# after a prefill cost tens of microseconds, more than the tolerance where a whole step takes 0.1 ms
TIMING_SLACK = 5e-5
MIN_TERNARY_BYTES = math.log2(3) / 8  # no layout stores a ternary weight in fewer bits than log2(3)
MAX_TERNARY_BYTES = 0.5  # 2-bit codes plus per-32 float32 scales and row padding stay under 4 bits
_DISTINCT_SAMPLES = 0.5  # genuine nanosecond timers almost never repeat a value
# llama.cpp runs the SiLU `bitnet` architecture from these formats (harness.peers.llama_cpp)
PEER_ARCH, PEER_FORMATS = ARCH_BITNET, (FORMAT_TQ2_0, FORMAT_TQ1_0)


def _version_key(text: str) -> tuple[int, ...] | None:
    match = re.match(r"\d+(?:\.\d+)*", text)
    return tuple(int(p) for p in match.group(0).split(".")) if match else None


def harness_version_gate(c: Check) -> None:
    """A receipt from a harness newer than this verifier may hold facts this verifier cannot judge."""
    ours = harness_version()
    mine, theirs = _version_key(ours), _version_key(str(c.receipt["harness"]["version"]))
    if mine is None or mine == (0,):
        c.skip(f"this verifier's own version is unknown ({ours})")
    if theirs is None or theirs > mine:
        c.fail(
            f"a receipt written by harness {ours} or older",
            f"version {c.receipt['harness']['version']!r}",
            "Verify it with the harness that wrote it (or a newer one); this verifier cannot vouch for it.",
        )


def model_facts(c: Check) -> None:
    """The model facts agree with each other: 7 ternary matrices per layer, as the probe saw the file."""
    model = c.receipt["model"]
    per_format = model["tensors_per_format"]
    ternary = sum(n for f, n in per_format.items() if f in WEIGHT_FORMATS)
    if ternary != MATMULS_PER_LAYER * model["n_layers"]:
        c.fail(
            f"{MATMULS_PER_LAYER} ternary matrices per layer: {MATMULS_PER_LAYER * model['n_layers']} "
            f"for {model['n_layers']} layers",
            f"tensors_per_format {per_format}",
            "The layer count and the file's tensors contradict each other.",
        )
    probe = c.receipt["phases"].get("probe")
    if probe is None:
        return
    seen: dict[str, int] = {}
    for tensor in probe["tensors"]:
        seen[tensor["flavor"]] = seen.get(tensor["flavor"], 0) + 1
    if seen != per_format:
        c.fail(f"the probe's tensors per format {dict(sorted(seen.items()))}", per_format, "Record the file.")
    shapes = matrix_shapes(model)
    names = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    want = {
        f"blk.{i}.{n}.weight": list(s)
        for i in range(model["n_layers"])
        for n, s in zip(names, shapes, strict=True)
    }
    wrong = [t["name"] for t in probe["tensors"] if t["name"] in want and t["shape"] != want[t["name"]]]
    if wrong:
        c.fail("probe tensor shapes from the model's dimensions", wrong[:5], "The shape facts were edited.")


def throughput(c: Check) -> None:
    r = c.receipt
    if "benchmark" not in r["phases"] and ("tokens_per_second" in r or receipt_kind(r) == "none"):
        c.fail(
            "phases.benchmark with raw decode latencies",
            "no benchmark phase",
            "A throughput without raw samples cannot be checked; run the benchmark phase.",
        )
        return
    bench = c.benchmark()
    try:
        tps = decode_tokens_per_second(bench["repetitions"])
    except HarnessError as exc:
        c.fail("decode latencies with a positive sum", str(exc), "Record real decode latencies.")
        return
    for where, value in (
        ("tokens_per_second", r["tokens_per_second"]),
        ("phases.benchmark.summary.tokens_per_second", bench["summary"]["tokens_per_second"]),
    ):
        if not close(value, tps):
            c.fail(
                f"{where} = {tps:.6g} (recomputed, within 1 %)",
                f"{value}",
                "Throughput must be decode steps / summed decode latencies (harness.receipts.summary).",
            )


def _check_percentiles(c: Check, where: str, samples: list[float], recorded: Mapping[str, float]) -> None:
    for key, value in percentiles(samples).items():
        if not close(recorded[key], value):
            c.fail(
                f"{where}.{key} = {value:.6g} (recomputed, within 1 %)",
                f"{recorded[key]}",
                "Summaries must be computed from the raw samples with harness.receipts.summary.percentiles.",
            )


def check_benchmark_summaries(c: Check, where: str, bench: Mapping[str, Any]) -> None:
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
            "decode_latency_seconds null exactly when there are no decode steps",
            f"{len(latencies)} steps, summary {summary['decode_latency_seconds']}",
            "Summaries must describe the recorded samples.",
        )


def summaries(c: Check) -> None:
    r = c.receipt
    bench = r["phases"].get("benchmark")
    if bench is not None:
        check_benchmark_summaries(c, "benchmark", bench)
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
            c.fail(f"timing.steps[{i}].layers with {n_layers} entries", len(step["layers"]), "One per layer.")
        elif sum(step["layers"]) > step["forward"] * (1 + REL_TOL) + ABS_TOL:
            c.fail(
                f"timing.steps[{i}] layer seconds summing to at most forward {step['forward']}",
                sum(step["layers"]),
                "Per-layer times are parts of the forward time.",
            )


def _decode_steps_allowed(c: Check, generated: int) -> set[int]:
    """Decode steps a generation of `generated` tokens takes (engine.generate): the first token comes from the
    prefill; a run stopped by the limit skips the last step, a run stopped by EOS decoded every kept token."""
    r = c.receipt
    requested = r["tokens_requested"]
    context = r["model"].get("context_length")
    limit = requested if context is None else min(requested, context - r["prompt"]["token_count"] + 1)
    if generated >= limit:
        return {max(generated - 1, 0)}
    if context is None:  # the context may have ended it; older receipts do not record it
        return {generated, max(generated - 1, 0)}
    return {generated}


def check_generation_rows(c: Check, where: str, reps: Sequence[Mapping[str, Any]]) -> None:
    """Decode steps per repetition follow from its token count and the stopping rule."""
    for i, rep in enumerate(reps):
        allowed = _decode_steps_allowed(c, rep["tokens_generated"])
        steps = len(rep["decode_seconds"])
        if steps not in allowed:
            c.fail(
                f"{where}[{i}]: {' or '.join(map(str, sorted(allowed)))} decode steps for "
                f"{rep['tokens_generated']} tokens (of {c.receipt['tokens_requested']} requested)",
                f"{steps} decode steps",
                "Every kept token but the last is decoded (all of them when EOS stopped the run); samples "
                "were dropped or added.",
            )


def tokens(c: Check) -> None:
    r = c.receipt
    if "output_digest" not in r:
        c.benchmark()  # a phase receipt generates no tokens
    digest, requested = r["output_digest"], r["tokens_requested"]
    if r["tokens_generated"] != digest["count"]:
        c.fail(
            f"tokens_generated = output_digest.count = {digest['count']}",
            r["tokens_generated"],
            "The generated-token count must be the number of ids the output digest covers.",
        )
    if r["tokens_generated"] > requested:
        c.fail(f"tokens_generated <= tokens_requested = {requested}", r["tokens_generated"], "Cannot be.")
    bench = r["phases"].get("benchmark")
    if bench is None:
        return
    reps = bench["repetitions"]
    first = reps[0]
    if first["output_sha256"] != digest["sha256"] or first["tokens_generated"] != digest["count"]:
        c.fail(
            f"first repetition output {digest['sha256'][:16]}.. ({digest['count']} tokens)",
            f"{first['output_sha256'][:16]}.. ({first['tokens_generated']} tokens)",
            "output_digest must describe the first measured repetition.",
        )
    over = [i for i, x in enumerate(reps) if x["tokens_generated"] > requested]
    if over:
        c.fail(
            f"every repetition generating <= {requested} tokens",
            f"repetitions {over} exceed it",
            "Cannot be.",
        )
    check_generation_rows(c, "benchmark.repetitions", reps)


def determinism(c: Check) -> None:
    r = c.receipt
    bench = c.benchmark()
    if not r["deterministic"]:
        c.skip("the receipt declares a nondeterministic run")
    digest = r["output_digest"]["sha256"]
    differ = [i for i, x in enumerate(bench["repetitions"]) if x["output_sha256"] != digest]
    if differ:
        c.fail(
            "identical output in every repetition of a deterministic run",
            f"repetitions {differ} differ",
            "Investigate nondeterminism (threads, sampling seed) before trusting it.",
        )


def duplicate_samples(c: Check) -> None:
    """Timers with nanosecond resolution do not repeat themselves: copied rows and pasted constants do."""
    reps = c.benchmark()["repetitions"]
    seen: dict[tuple[float, ...], int] = {}
    for i, rep in enumerate(reps):
        key = (rep["prefill_seconds"], rep["ttft_seconds"], *rep["decode_seconds"])
        if key in seen:
            c.fail(
                "distinct samples in every repetition", f"repetition {i} repeats {seen[key]}", "Copied row."
            )
        seen.setdefault(key, i)
    steps = [s for rep in reps for s in rep["decode_seconds"]]
    if len(steps) >= 8 and len(set(steps)) < _DISTINCT_SAMPLES * len(steps):
        c.fail(
            f"mostly distinct decode latencies (at least {_DISTINCT_SAMPLES:.0%})",
            f"{len(set(steps))} distinct of {len(steps)}",
            "Measured latencies were replaced by repeated values.",
        )


def _row_latencies(c: Check, where: str, reps: Sequence[Mapping[str, Any]]) -> None:
    for i, rep in enumerate(reps):
        prefill, ttft = rep["prefill_seconds"], rep["ttft_seconds"]
        if not LATENCY_FLOOR <= prefill <= ttft:
            c.fail(
                f"{where}[{i}]: {LATENCY_FLOOR:g} s <= prefill <= TTFT (TTFT includes the prefill)",
                f"prefill {prefill}, TTFT {ttft}",
                "The first token cannot come before the prompt is processed.",
            )
        fast = [s for s in rep["decode_seconds"] if s < LATENCY_FLOOR]
        if fast:
            c.fail(
                f"{where}[{i}]: every decode step >= {LATENCY_FLOOR:g} s",
                f"{len(fast)} steps below it (smallest {min(fast)})",
                "No forward pass of a model takes less than a microsecond.",
            )


def latencies(c: Check) -> None:
    r = c.receipt
    _row_latencies(c, "benchmark.repetitions", c.benchmark()["repetitions"])
    timing = r["phases"].get("timing")
    for i, step in enumerate(timing["steps"] if timing else ()):
        work = step["embed"] + step["forward"] + step["logits"]
        if work < LATENCY_FLOOR:
            c.fail(f"timing.steps[{i}] >= {LATENCY_FLOOR:g} s", work, "A decode step takes time.")
    probe = r["phases"].get("probe")
    for cand in probe["candidates"] if probe else ():
        if min(cand["seconds"]) < LATENCY_FLOOR:
            c.fail(
                f"probe {cand['kernel']} {cand['shape']} calls >= {LATENCY_FLOOR:g} s",
                min(cand["seconds"]),
                "A kernel call takes time.",
            )


def measured_seconds(receipt: Mapping[str, Any]) -> float:
    """The measured time the receipt accounts for: load, JIT, probe calls, timing steps, every benchmark row
    (the engine's and a peer's). Warm-up repetitions are not recorded, so this is a lower bound."""
    phases = receipt["phases"]
    total = receipt["load_seconds"] + receipt["jit_seconds"]
    for cand in phases.get("probe", {}).get("candidates", ()):
        total += sum(cand["seconds"])
    for step in phases.get("timing", {}).get("steps", ()):
        total += step["embed"] + step["forward"] + step["logits"] + step["sample"]
    benches = [phases.get("benchmark"), (receipt.get("peer") or {}).get("benchmark")]
    for bench in (b for b in benches if b is not None):
        for rep in bench["repetitions"]:
            total += rep["ttft_seconds"] + sum(rep["decode_seconds"])
    return total


def timestamps(c: Check) -> None:
    r = c.receipt
    try:
        started, finished = parse_timestamp(r["started_at"]), parse_timestamp(r["timestamp"])
    except HarnessError as exc:
        c.fail("RFC 3339 timestamps with a time zone", str(exc), "Write timestamps with utc_timestamp().")
        return
    if started > finished:
        c.fail("started_at <= timestamp", f"{r['started_at']} > {r['timestamp']}", "Check the clock.")
    now = datetime.now(timezone.utc)
    if finished > now + CLOCK_SKEW:
        c.fail(f"timestamp not in the future (now {now.isoformat()})", r["timestamp"], "Check the clock.")
    elapsed = (finished - started).total_seconds()
    needed = measured_seconds(r)
    if elapsed * (1 + REL_TOL) + 1e-3 < needed:
        c.fail(
            f"timestamp - started_at >= load + JIT + measured time = {needed:.6g} s",
            f"{elapsed:.6g} s",
            "The wall clock between start and finish must hold everything the receipt says it timed.",
        )


def host_resources(c: Check) -> None:
    r = c.receipt
    if r["threads"] > r["host"]["cores"]:
        c.fail(
            f"threads <= the host's {r['host']['cores']} usable cores",
            r["threads"],
            "numba cannot run more worker threads than the CPUs the process may use.",
        )
    if r["peak_rss_bytes"] < MIN_PEAK_RSS:
        c.fail(f"peak_rss_bytes >= {MIN_PEAK_RSS}", r["peak_rss_bytes"], "A loaded engine is larger.")


def _matrix_weights(model: Mapping[str, Any]) -> int:
    return int(model["n_layers"]) * sum(rows * cols for rows, cols in matrix_shapes(model))


def _bandwidth(c: Check) -> Mapping[str, Any]:
    bw = c.receipt.get("bandwidth")
    if bw is None:
        c.skip("no bandwidth measurement (benchmark --no-bandwidth)")
    return bw


def bandwidth(c: Check) -> None:
    r = c.receipt
    bw = r.get("bandwidth")
    if bw is None:
        c.note("no bandwidth section: nothing claimed")
        return
    floor = bw["read_gbps"] * 1e9 / bw["weight_bytes_per_token"]
    if not close(bw["decode_floor_tok_s"], floor):
        c.fail(
            f"decode_floor_tok_s = read_gbps * 1e9 / weight_bytes_per_token = {floor:.6g}",
            bw["decode_floor_tok_s"],
            "Recompute the floor from the measured bandwidth.",
        )
    if "probes" in bw:
        _check_probes(c, bw)
    model = r["model"]
    weights = _matrix_weights(model)
    low = int(weights * MIN_TERNARY_BYTES)
    high = int(weights * 1.0) + model["vocab_size"] * (model["hidden"] * 4 + 8)
    if not low <= bw["weight_bytes_per_token"] <= high:
        c.fail(
            f"weight_bytes_per_token in {low}..{high} ({weights} ternary weights read per token)",
            bw["weight_bytes_per_token"],
            "Every matrix is read once per decode step; the bytes follow from the model's shape.",
        )
    bench = r["phases"].get("benchmark")
    if bench is None or floor <= 0:
        return
    ratio = decode_tokens_per_second(bench["repetitions"]) / floor
    if not close(bw["ratio_to_floor"], ratio):
        c.fail(
            f"ratio_to_floor = tokens_per_second / floor = {ratio:.6g}",
            bw["ratio_to_floor"],
            "Recompute the ratio from the measured throughput.",
        )


def _check_probes(c: Check, bw: Mapping[str, Any]) -> None:
    """The floor is the median of every recorded pass; each probe's buffer was beyond the cache; the noisy
    flag follows from the probes' disagreement: harness.machine.bandwidth's Floor, rebuilt from the passes."""
    probes = bw["probes"]
    timed = [(i, p) for i, p in enumerate(probes) if p["samples_gbps"]]
    if not timed:
        c.fail("bandwidth probes with timed passes", "none", "The floor must come from recorded passes.")
        return
    floor = Floor(tuple(Probe(tuple(p["samples_gbps"]), p["buffer_bytes"], p["threads"]) for _, p in timed))
    for name, claimed, value in [
        ("read_gbps", bw["read_gbps"], floor.read_gbps),
        *(
            (f"probes[{i}].median_gbps", p["median_gbps"], probe.median_gbps)
            for (i, p), probe in zip(timed, floor.probes, strict=True)
        ),
    ]:
        if not close(claimed, value):
            c.fail(
                f"{name} = {value:.6g} (the median of the passes)", claimed, "Recompute it from the passes."
            )
    llc = c.receipt["host"].get("llc_bytes") or 0
    least = max(MIN_PROBE_BYTES, LLC_MULTIPLE * llc)
    small = [p["buffer_bytes"] for p in probes if p["buffer_bytes"] < least]
    if small:
        c.fail(
            f"probe buffers of at least {least} bytes (1 GiB and {LLC_MULTIPLE}x the last-level cache)",
            small,
            "A buffer the cache can hold measures the cache, not memory.",
        )
    if floor.disagreement is not None and "noisy" in bw:
        disagree = floor.noisy_reason is not None
        if bw["noisy"] != disagree:
            c.fail(
                f"bandwidth.noisy = {disagree} (probes disagreeing by more than {DISAGREEMENT_LIMIT:.0%})",
                bw["noisy"],
                "The noisy flag follows from the probes; it cannot be set or cleared by hand.",
            )


def bandwidth_floor(c: Check) -> None:
    """Decode cannot read the weights faster than memory delivers them once they no longer fit in cache."""
    r = c.receipt
    bench = c.benchmark()
    bw = _bandwidth(c)
    llc = r["host"].get("llc_bytes")
    if llc is None:
        c.skip("host.llc_bytes is not recorded: whether the weights fit in cache is unknown")
    wbpt = bw["weight_bytes_per_token"]
    if wbpt <= llc:
        c.skip(
            f"the {wbpt} weight bytes per token fit in the {llc}-byte last-level cache: memory does not bind"
        )
    bound = FLOOR_TOLERANCE * bw["read_gbps"] * 1e9 / (wbpt - llc)
    tps = decode_tokens_per_second(bench["repetitions"])
    if tps > bound:
        c.fail(
            f"decode <= {FLOOR_TOLERANCE} x read_gbps / (weight bytes - cache) = {bound:.6g} tok/s",
            f"{tps:.6g} tok/s ({tps / bw['decode_floor_tok_s']:.3g} x the floor)",
            "No decode step reads its weights faster than the measured memory bandwidth.",
        )


def timing_consistency(c: Check) -> None:
    """The benchmark's decode step does the timing phase's work (embed, forward, logits): its median cannot
    beat the fastest timing step by more than TIMING_TOLERANCE (after TIMING_SLACK for the timing phase's
    fixed costs); a noisy machine makes it a warning."""
    r = c.receipt
    bench = c.benchmark()
    timing = r["phases"].get("timing")
    if timing is None:
        c.skip("no timing phase")
    steps = [s for rep in bench["repetitions"] for s in rep["decode_seconds"]]
    if not steps:
        c.skip("no decode steps in the benchmark")
    fastest = min(s["embed"] + s["forward"] + s["logits"] for s in timing["steps"])
    median = statistics.median(steps)
    if median * TIMING_TOLERANCE + TIMING_SLACK >= fastest:
        return
    bound = (fastest - TIMING_SLACK) / TIMING_TOLERANCE
    expected = (
        f"benchmark median decode step >= (fastest timing step - {TIMING_SLACK} s) / {TIMING_TOLERANCE}"
        f" = {bound:.6g} s"
    )
    found = f"{median:.6g} s ({fastest / median:.3g}x faster than the timing phase)"
    noise = r.get("noise")
    if isinstance(noise, Mapping) and noise.get("noisy") is False:
        c.fail(
            expected,
            found,
            "One phase's samples were edited: the same decode step cannot be this much faster.",
        )
    elif isinstance(noise, Mapping):
        c.warn(expected, found, "The receipt records a noisy machine: its speed is unreliable.")
    else:
        c.warn(
            expected, found, "The receipt records no noise assessment; a busy machine or an edit: unreliable."
        )


def probe(c: Check) -> None:
    """Each probe figure follows from its raw seconds and shape; the bytes per weight are physical."""
    r = c.receipt
    section = r["phases"].get("probe")
    if section is None:
        c.note("no probe phase: nothing claimed")
        return
    shapes = set(matrix_shapes(r["model"]))
    allowed = format_kernels(r["model"]["format"])
    for cand in section["candidates"]:
        rows, cols = cand["shape"]
        where = f"probe {cand['kernel']} {rows}x{cols}"
        if (
            (rows, cols) not in shapes
            or cand["kernel"] not in allowed
            or not cand["kernel"].endswith("_gemv")
        ):
            c.fail(
                "a GEMV of this model's format on one of its matrix shapes", where, "Probe the model itself."
            )
            continue
        median = statistics.median(cand["seconds"])
        gmacs = rows * cols / median / 1e9
        if not close(cand["gmacs"], gmacs):
            c.fail(
                f"{where}: gmacs = rows * cols / median seconds = {gmacs:.6g}", cand["gmacs"], "Recompute."
            )
        per_weight = cand["gbps"] * 1e9 * median / (rows * cols)
        padded = -(-cols // 256) * 256 / cols
        if not MIN_TERNARY_BYTES * (1 - REL_TOL) <= per_weight <= MAX_TERNARY_BYTES * padded:
            c.fail(
                f"{where}: gbps * median seconds / weights in {MIN_TERNARY_BYTES:.3f}.."
                f"{MAX_TERNARY_BYTES * padded:.3f} bytes per weight",
                f"{per_weight:.4g} bytes per weight ({cand['gbps']} GB/s)",
                "The bytes a ternary matvec reads follow from its shape; this speed was not measured.",
            )


def peer(c: Check) -> None:
    """The peer's figures: the same file and threads, a file it can run, its rows and ratios recomputed."""
    r = c.receipt
    section = r.get("peer")
    if section is None:
        c.note("no peer section: nothing claimed")
        return
    model = r["model"]
    if model["architecture"] != PEER_ARCH or model["format"] not in PEER_FORMATS:
        c.fail(
            f"a {PEER_ARCH} model in {' or '.join(PEER_FORMATS)} (the files llama.cpp runs)",
            f"{model['architecture']} {model['format']}",
            "llama.cpp cannot have run this model; the peer section was not measured.",
        )
    if section["model_sha256"] != model["sha256"]:
        c.fail(f"peer.model_sha256 = model.sha256 ({model['sha256']})", section["model_sha256"], "Same file.")
    if section["threads"] != r["threads"]:
        c.fail(
            f"peer.threads = threads = {r['threads']}", section["threads"], "Run both with one thread count."
        )
    bench, engine_bench = section["benchmark"], r["phases"].get("benchmark")
    check_benchmark_summaries(c, "peer.benchmark", bench)
    check_generation_rows(c, "peer.benchmark.repetitions", bench["repetitions"])
    _row_latencies(c, "peer.benchmark.repetitions", bench["repetitions"])
    tps = decode_tokens_per_second(bench["repetitions"])
    if not close(bench["summary"]["tokens_per_second"], tps):
        c.fail(
            f"peer.benchmark.summary.tokens_per_second = {tps:.6g} (recomputed)",
            bench["summary"]["tokens_per_second"],
            "Throughput must be decode steps / summed decode latencies (harness.receipts.summary).",
        )
    if engine_bench is None:
        c.fail("phases.benchmark beside the peer's", "none", "A ratio needs the engine's own run.")
        return
    try:
        want = peer_ratios(engine_bench["repetitions"], bench["repetitions"])
    except HarnessError as exc:
        c.fail("decode steps and prefill times on both sides", str(exc), "Record real timings.")
        return
    for key, value in want.items():
        if not close(section[key], value):
            c.fail(
                f"peer.{key} = {value:.6g} (recomputed)", section[key], "Recompute it from the raw samples."
            )


def parity(c: Check) -> None:
    """The parity summary recomputed from its per-position figures and greedy runs (bitnet-harness parity)."""
    section = c.receipt.get("parity")
    if section is None:
        c.note("no parity section: nothing claimed")
        return
    if "positions" not in section:
        c.skip("the parity section has no per-position figures to recompute its summary from")
    pos = section["positions"]
    n = len(pos)
    want: list[tuple[str, float, object]] = [
        ("tokens_compared", n, section["tokens_compared"]),
        (
            "max_abs_logit_error",
            max((p["max_abs_error"] for p in pos), default=0.0),
            section["max_abs_logit_error"],
        ),
        ("top1_agreement", sum(p["top1"] for p in pos) / n if n else 1.0, section["top1_agreement"]),
    ]
    if "min_cosine" in section:
        want.append(("min_cosine", min((p["cosine"] for p in pos), default=1.0), section["min_cosine"]))
    if "mean_top5_overlap" in section:
        mean = sum(p["top5_overlap"] for p in pos) / n if n else 1.0
        want.append(("mean_top5_overlap", mean, section["mean_top5_overlap"]))
    greedy = section.get("greedy")
    if greedy is not None:
        divergences = greedy["first_divergence"]
        want.append(("greedy.prompts", len(divergences), greedy["prompts"]))
        want.append(("greedy.matching", sum(d is None for d in divergences), greedy["matching"]))
        late = [d for d in divergences if d is not None and d >= greedy["steps"]]
        if late:
            c.fail(f"first divergences below greedy.steps = {greedy['steps']}", late, "Rerun parity.")
    for key, value, found in want:
        if not isinstance(found, int | float) or not math.isclose(value, found, rel_tol=1e-12, abs_tol=1e-12):
            c.fail(
                f"parity.{key} = {value:.12g} (recomputed)", found, "Rerun parity; do not edit its figures."
            )
    tok = section.get("tokenizer")
    if tok is not None and max(tok["ids_identical"], tok["detokenized_identical"]) > tok["strings"]:
        c.fail(f"at most {tok['strings']} identical strings", tok, "Rerun parity; do not edit its figures.")


def checksum(c: Check) -> None:
    """content_digest is an unkeyed sha256 anyone can recompute: it detects accidental edits, not
    tampering."""
    want = content_digest(c.receipt)
    if c.receipt["content_digest"] != want:
        c.fail(
            f"content_digest {want}",
            c.receipt["content_digest"],
            "checksum: the file changed after it was written (an accidental edit or a copy error; the "
            "checksum detects accidental edits, not tampering).",
        )
