"""What a careful forger does after editing a receipt: recompute everything derived, then the checksum.

Every helper here uses the harness's own public math (summaries, expectations, finalize), so a forgery built
with them passes every arithmetic gate; only physics, evidence or a signature can catch what is left.
"""

import copy
from collections.abc import Callable
from typing import Any

from harness.phases.benchmark import summarize
from harness.receipts.digest import finalize
from harness.receipts.expectations import (
    expected_counts,
    per_kernel_expectations,
    workload_from_receipt,
)
from harness.receipts.summary import decode_tokens_per_second, peer_ratios, percentiles

Receipt = dict[str, Any]
STAGES = ("embed", "forward", "logits", "sample")


def resummarize(receipt: Receipt) -> None:
    """Summaries, throughput, bandwidth ratio and peer ratios from the (edited) raw samples."""
    bench = receipt["phases"].get("benchmark")
    if bench is not None:
        receipt["phases"]["benchmark"] = summarize(bench["repetitions"], bench["warmup_repetitions"])
        receipt["tokens_per_second"] = decode_tokens_per_second(bench["repetitions"])
    timing = receipt["phases"].get("timing")
    if timing is not None:
        steps = timing["steps"]
        pct = {s: percentiles([step[s] for step in steps]) for s in STAGES}
        pct["total"] = percentiles([sum(step[s] for s in STAGES) for step in steps])
        timing["percentiles"] = pct
    bw = receipt.get("bandwidth")
    if bw is not None:
        bw["decode_floor_tok_s"] = bw["read_gbps"] * 1e9 / bw["weight_bytes_per_token"]
        bw["ratio_to_floor"] = receipt["tokens_per_second"] / bw["decode_floor_tok_s"]
    peer = receipt.get("peer")
    if peer is not None:
        peer["benchmark"] = summarize(
            peer["benchmark"]["repetitions"], peer["benchmark"]["warmup_repetitions"]
        )
        peer.update(
            peer_ratios(receipt["phases"]["benchmark"]["repetitions"], peer["benchmark"]["repetitions"])
        )


def recount(receipt: Receipt) -> None:
    """Kernel counters for the receipt's (edited) model and workload, as the expectation table demands."""
    counts = receipt["kernel_counts"]
    work = workload_from_receipt(receipt)
    families = {tuple(e["shape"]): e["kernel"] for e in receipt["kernel_choice"]["per_shape"]}
    matmuls = per_kernel_expectations(receipt["model"], work, families)
    ternary = {e.group for e in matmuls}
    for kid in [k for k in counts if k.startswith(("i2s_", "tl1_", "tl2_")) and k not in ternary]:
        del counts[kid]
    for exp in matmuls:
        counts[exp.group] = {"calls": exp.calls[0], "rows": exp.rows[0], "elements": exp.elements[0]}
    int8 = work.forwards if "logits_i8" in counts else 0
    for exp in expected_counts(receipt["model"], work, sorted(counts), int8):
        if exp.group.startswith("ternary"):
            continue
        (kid,) = [k for k in exp.ids if k in counts]
        counts[kid] = {**counts[kid], "calls": exp.calls[0]}
    receipt["kernels"] = sorted(counts)
    variants = receipt["kernel_choice"].get("variants")
    if variants is not None:
        for kid in [k for k in variants if k not in counts]:
            del variants[kid]


def forge(genuine: Receipt, edit: Callable[[Receipt], object], *, recount_kernels: bool = False) -> Receipt:
    """A copy of `genuine` changed by `edit`, then made arithmetically consistent again and re-checksummed."""
    receipt = copy.deepcopy(genuine)
    edit(receipt)
    if recount_kernels:
        recount(receipt)
    resummarize(receipt)
    return finalize(receipt)
