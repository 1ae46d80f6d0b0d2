"""Gates that hold the receipt against evidence from outside it: the model file, a re-run, a signature.

The evidence itself is gathered above this package (harness.session.evidence loads the model and replays the
workload; harness.receipts.signing checks an envelope); these gates only compare it with the claims.
"""

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.constants import VARIANT_FEATURES
from harness.receipts.checks import Check
from harness.receipts.gates.kernels import variant_flags

# model facts the file decides; `path` is where it was, not what it is
BOUND_FACTS = (
    "sha256",
    "size_bytes",
    "architecture",
    "preset",
    "preset_seed",
    "format",
    "n_layers",
    "hidden",
    "ffn",
    "n_heads",
    "n_kv_heads",
    "head_dim",
    "vocab_size",
    "context_length",
    "tensors_per_format",
)


def model_binding(c: Check) -> None:
    """Every model fact in the receipt is what the given file's header says; so are the bytes per token."""
    facts = c.evidence.model
    if facts is None:
        c.skip("needs --model FILE (or --replay, which binds the file it replays on)", requested=False)
    model = c.receipt["model"]
    for key in BOUND_FACTS:
        if key == "context_length" and key not in model:
            c.note("the receipt records no context_length")
            continue
        if model.get(key) != facts.section.get(key):
            c.fail(
                f"model.{key} = {facts.section.get(key)!r} ({facts.path})",
                repr(model.get(key)),
                "This receipt was not made with this model file, or its model facts were edited.",
            )
    bw = c.receipt.get("bandwidth")
    if bw is None or facts.weight_bytes_per_token is None:
        c.note("weight bytes per token not compared (no bandwidth section, or the file could not be loaded)")
    elif bw["weight_bytes_per_token"] != facts.weight_bytes_per_token:
        c.fail(
            f"bandwidth.weight_bytes_per_token = {facts.weight_bytes_per_token} (the file, with the "
            "receipt's kernel families and logits path)",
            bw["weight_bytes_per_token"],
            "The bytes one decode step reads follow from the file and the kernels; they were edited.",
        )


def _replay(c: Check) -> Any:
    run = c.evidence.replay
    if run is None:
        withheld = c.evidence.withheld.get("replay")
        c.skip(withheld or "needs --replay", requested=withheld is not None)
    return run


def replay(c: Check) -> None:
    """The recorded workload run again gives each repetition's tokens, the same counters and variants."""
    c.benchmark()  # a phase receipt records no generation to run again
    r, run = c.receipt, _replay(c)
    if not run.prompt_matches:
        c.fail(
            f"the recorded prompt text giving the recorded ids ({r['prompt']['token_ids_sha256'][:16]}..)",
            "other ids on this model",
            "The prompt fields contradict each other or the model; the receipt was edited.",
        )
        return
    mine, theirs = r["phases"]["benchmark"]["repetitions"], run.benchmark["repetitions"]
    for i, (want, got) in enumerate(zip(mine, theirs, strict=True)):  # the replay runs as many
        recorded = (want["output_sha256"], want["tokens_generated"], len(want["decode_seconds"]))
        again = (got["output_sha256"], got["tokens_generated"], len(got["decode_seconds"]))
        if recorded != again:
            c.fail(
                f"repetition {i}: output {recorded[0][:16]}.., {recorded[1]} tokens, {recorded[2]} steps",
                f"{again[0][:16]}.., {again[1]} tokens, {again[2]} steps",
                "The engine does not reproduce the recorded generation; the receipt or the engine changed.",
            )
    if r["kernel_counts"] != run.kernel_counts or sorted(r["kernels"]) != sorted(run.kernel_counts):
        diff = sorted(
            k
            for k in set(r["kernel_counts"]) | set(run.kernel_counts)
            if r["kernel_counts"].get(k) != run.kernel_counts.get(k)
        )
        c.fail(
            "the replay's kernel ids and counters",
            f"differences in {diff or 'the kernels list'}",
            "The recorded kernels and counters are not what this workload runs.",
        )
    _compare_variants(c, r, run)
    if run.threads != r["threads"]:
        c.note(
            f"replayed with {run.threads} threads (the receipt's {r['threads']} are not available here; "
            "tokens and counters do not depend on the thread count)"
        )


def _compare_variants(c: Check, r: Mapping[str, Any], run: Any) -> None:
    recorded = r["kernel_choice"].get("variants")
    if recorded is None:
        c.note("variants not compared: the receipt records none")
        return
    relevant = {f for v in VARIANT_FEATURES for f in variant_flags(v)}
    theirs, ours = set(r["host"]["cpu_flags"]) & relevant, set(run.cpu_flags) & relevant
    if theirs != ours:
        here, there = ", ".join(sorted(ours)) or "none", ", ".join(sorted(theirs)) or "none"
        c.note(
            f"variants not compared: this host's instruction sets ({here}) differ from the receipt's: {there}"
        )
        return
    if recorded != run.variants:
        c.fail(
            f"the variants this host takes with the same CPU flags: {run.variants}",
            recorded,
            "The instruction-set paths were relabelled.",
        )


def _samples(reps: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [s for rep in reps for s in (rep[key] if key == "decode_seconds" else [rep[key]])]


@dataclass(frozen=True)
class Shortfall:
    """A claimed median this host's fastest sample did not come within the tolerance of."""

    label: str
    claim: float
    fastest: float
    samples: int


def speed_shortfalls(
    claimed: Sequence[Mapping[str, Any]], measured: Sequence[Mapping[str, Any]], tolerance: float
) -> list[Shortfall]:
    """The claimed median decode step and median prefill (over the receipt's repetitions) that beat the
    fastest of `measured` by more than `tolerance`; empty when the re-measurement reached both claims."""
    out = []
    for key, label in (("decode_seconds", "decode step"), ("prefill_seconds", "prefill")):
        mine, again = _samples(claimed, key), _samples(measured, key)
        if mine and again:
            claim, fastest = statistics.median(mine), min(again)
            if claim * (1 + tolerance) < fastest:
                out.append(Shortfall(label, claim, fastest, len(again)))
    return out


def remeasure(c: Check) -> None:
    """On the same CPU model and thread count, the receipt's median decode step and median prefill may not
    beat the fastest single one this host re-measures by more than the tolerance. Noise only adds time, so
    the fastest of many samples is this host's uncontended cost; a genuine median is never below it, even when
    the verifying machine is busier than the measuring one was. A shared host slows down in spells of
    seconds, so the re-measurement goes on in rounds until it reaches the claim or its time budget is spent:
    a failure is a shortfall that lasted the whole budget. A shortfall while other processes, the hypervisor
    or the load kept this host busy proves nothing: the gate is then not checked, and says why."""
    r, tolerance = c.receipt, c.evidence.remeasure
    c.benchmark()
    if tolerance is None:
        c.skip("needs --replay --remeasure", requested=False)
    run = _replay(c)
    if run.cpu_model != r["host"]["cpu_model"] or run.threads != r["threads"]:
        c.skip(
            f"the receipt ran on {r['host']['cpu_model']!r} with {r['threads']} threads, this host is "
            f"{run.cpu_model!r} with {run.threads}: speeds are not comparable"
        )
    timed = run.remeasured or run.benchmark
    span = ""
    if run.remeasured is not None:
        rounds = timed.get("rounds", 1)
        span = f" in {rounds} round{'s' if rounds != 1 else ''} over {timed.get('seconds', 0.0):.1f} s"
    shortfalls = speed_shortfalls(r["phases"]["benchmark"]["repetitions"], timed["repetitions"], tolerance)
    if shortfalls and timed.get("busy"):
        c.skip(
            f"this host was busy while re-measuring ({'; '.join(timed['busy'])}): its fastest "
            f"{shortfalls[0].label} ({shortfalls[0].fastest:.6g} s{span}) does not bound what a quiet run "
            f"reaches; re-verify on a quiet host"
        )
    for short in shortfalls:
        c.fail(
            f"median {short.label} >= {short.fastest:.6g} s / {1 + tolerance:g} (the fastest of "
            f"{short.samples} re-measured here{span}, {tolerance:.0%} tolerance)",
            f"{short.claim:.6g} s ({short.fastest / short.claim:.3g}x faster than this host ever ran it)",
            "The receipt claims a speed this machine does not reach.",
        )


def signature(c: Check) -> None:
    """A valid signature by the given public key over this receipt's bytes, name, run and commit."""
    att = c.evidence.attestation
    if att is None:
        c.skip("needs --public-key FILE", requested=False)
    if att.envelope is None:
        if c.evidence.require_signature:
            c.fail(
                "a signature envelope beside the receipt (--require-signature)",
                att.problem or "none",
                "Unsigned receipts are refused: their speed is self-reported.",
            )
            return
        c.skip(f"unsigned: {att.problem or 'no envelope beside the receipt'}")
    if att.problem is not None:
        c.fail(f"a valid signature by key {att.key_id}", att.problem, "Do not trust this receipt's claims.")
