"""Kernel counters a receipt's workload must produce: the one place the engine's call pattern is written down.

Per forward pass over L layers (prefill = one forward of the whole prompt with GEMM kernels; decode step = one
forward of one token with GEMV kernels), in the layer order of docs/formats.md:

| kernel (group)          | calls per forward | why                                                     |
| ----------------------- | ----------------- | ------------------------------------------------------- |
| ternary GEMM / GEMV     | 7 L               | q, k, v, attn_output, ffn_gate, ffn_up, ffn_down        |
| rmsnorm                 | 4 L + 1           | attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm; final |
| embed_lookup            | 1                 | token rows of the embedding                             |
| attention_gqa           | L                 | one call per layer                                      |
| relu2_gate + silu_gate  | L                 | whichever the architecture uses                         |
| residual_add            | 2 L               | after attention and after the FFN                       |
| logits_i8 + fp32_logits | 1                 | last position only                                      |
| act_quant_i8            | 4 L (+ 1)         | q/k/v, attn_output, gate/up, down inputs; + int8 logits |
| rope_neox               | 2 L               | q and k rotated by separate calls                       |

Ternary matmuls are also checked on rows (output rows x tokens) and elements (multiply-accumulates), which
follow from the model shape. One token through one layer produces q_dim + 2 kv_dim + hidden + 2 ffn + hidden
rows and 2 hidden q_dim + 2 hidden kv_dim + 3 hidden ffn MACs (q_dim = n_heads head_dim, kv_dim = n_kv_heads
head_dim). tests/trace_prediction.expected_counts predicts the same trace per tensor (tests/test_verify.py
checks that the two agree); adjust this table if the engine's call pattern changes.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MATMULS_PER_LAYER = 7
TERNARY_PREFIXES = ("i2s_", "tl1_", "tl2_")


@dataclass(frozen=True)
class Workload:
    """Forward passes the kernel counters cover."""

    prefill_forwards: int
    prefill_tokens: int
    decode_steps: int

    @property
    def forwards(self) -> int:
        return self.prefill_forwards + self.decode_steps


@dataclass(frozen=True)
class Expectation:
    """Inclusive bounds on the summed counters of a group of kernel ids; None leaves a counter unchecked."""

    group: str
    ids: tuple[str, ...]
    calls: tuple[int, int]
    rows: tuple[int, int] | None = None
    elements: tuple[int, int] | None = None


def is_ternary(kernel_id: str) -> bool:
    return kernel_id.startswith(TERNARY_PREFIXES)


def workload_from_receipt(receipt: Mapping[str, Any]) -> Workload:
    """Each measured benchmark repetition is one prefill of the prompt plus one forward per decode step; a
    timing receipt (no benchmark phase) counts one prefill of the prompt and one forward per timed step."""
    phases = receipt["phases"]
    prompt_tokens = int(receipt["prompt"]["token_count"])
    if "benchmark" not in phases:
        return Workload(1, prompt_tokens, len(phases["timing"]["steps"]))
    reps = phases["benchmark"]["repetitions"]
    return Workload(
        prefill_forwards=len(reps),
        prefill_tokens=len(reps) * prompt_tokens,
        decode_steps=sum(len(rep["decode_seconds"]) for rep in reps),
    )


def probe_expectations(probe: Mapping[str, Any], kernel_ids: list[str]) -> list[Expectation]:
    """A probe receipt's ternary counters: the probe runs each candidate once for its error, then once per
    timed sample, on its shape; no other ternary kernel runs (activation quantization is not checked)."""
    totals: dict[str, list[int]] = {}
    for cand in probe["candidates"]:
        rows, cols = (int(d) for d in cand["shape"])
        calls = 1 + len(cand["seconds"])
        total = totals.setdefault(str(cand["kernel"]), [0, 0, 0])
        total[0] += calls
        total[1] += calls * rows
        total[2] += calls * rows * cols
    out = [
        Expectation(f"probe {k}", (k,), calls=_exact(c), rows=_exact(r), elements=_exact(e))
        for k, (c, r, e) in sorted(totals.items())
    ]
    others = tuple(k for k in kernel_ids if is_ternary(k) and k not in totals)
    return [*out, Expectation("ternary kernels that are no probe candidate", others, calls=_exact(0))]


def _exact(n: int) -> tuple[int, int]:
    return (n, n)


def expected_counts(
    model: Mapping[str, Any], work: Workload, kernel_ids: list[str], int8_logits: int
) -> list[Expectation]:
    """Expectations for a model shape and workload.

    `kernel_ids` sorts the ternary ids into GEMM and GEMV; `int8_logits` is the number of forwards whose
    logits went through logits_i8 (each quantizes the final hidden state once more).
    """
    n_layers = int(model["n_layers"])
    hidden, ffn = int(model["hidden"]), int(model["ffn"])
    q_dim = int(model["n_heads"]) * int(model["head_dim"])
    kv_dim = int(model["n_kv_heads"]) * int(model["head_dim"])
    rows_per_layer = q_dim + 2 * kv_dim + hidden + 2 * ffn + hidden
    macs_per_layer = 2 * hidden * q_dim + 2 * hidden * kv_dim + 3 * hidden * ffn
    forwards = work.forwards
    gemm_ids = tuple(k for k in kernel_ids if is_ternary(k) and k.endswith("_gemm"))
    gemv_ids = tuple(k for k in kernel_ids if is_ternary(k) and k.endswith("_gemv"))
    return [
        Expectation(
            "ternary GEMM (prefill)",
            gemm_ids,
            calls=_exact(MATMULS_PER_LAYER * n_layers * work.prefill_forwards),
            rows=_exact(rows_per_layer * n_layers * work.prefill_tokens),
            elements=_exact(macs_per_layer * n_layers * work.prefill_tokens),
        ),
        Expectation(
            "ternary GEMV (decode)",
            gemv_ids,
            calls=_exact(MATMULS_PER_LAYER * n_layers * work.decode_steps),
            rows=_exact(rows_per_layer * n_layers * work.decode_steps),
            elements=_exact(macs_per_layer * n_layers * work.decode_steps),
        ),
        Expectation("rmsnorm", ("rmsnorm",), calls=_exact((4 * n_layers + 1) * forwards)),
        Expectation("embed_lookup", ("embed_lookup",), calls=_exact(forwards)),
        Expectation("attention_gqa", ("attention_gqa",), calls=_exact(n_layers * forwards)),
        Expectation("ffn activation", ("relu2_gate", "silu_gate"), calls=_exact(n_layers * forwards)),
        Expectation("residual_add", ("residual_add",), calls=_exact(2 * n_layers * forwards)),
        Expectation("logits", ("logits_i8", "fp32_logits"), calls=_exact(forwards)),
        Expectation("act_quant_i8", ("act_quant_i8",), calls=_exact(4 * n_layers * forwards + int8_logits)),
        Expectation("rope_neox", ("rope_neox",), calls=_exact(2 * n_layers * forwards)),
    ]
