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

from engine.constants import (
    FORMAT_BITNET32,
    FORMAT_I2S,
    FORMAT_QK256,
    FORMAT_TQ1_0,
    FORMAT_TQ2_0,
    LAYER_MATRICES,
    ONE_SCALE_FORMATS,
    layer_matrix_shapes,
)

MATMULS_PER_LAYER = len(LAYER_MATRICES)
TERNARY_PREFIXES = ("i2s_", "tl1_", "tl2_")
# Ids only the parity command's llama.cpp-style activation path runs (act_quant="block256"), never a
# benchmark.
PARITY_ONLY = ("act_quant_q8k", "i2s_q8k_gemv")
# (kernel family, weight format) -> (GEMV id, GEMM id): the kernels engine.kernels.prepare_matrix pairs with a
# matrix of that format (tests/test_verify.py holds this table against the engine). tl1 / tl2 take any ternary
# format; QK256 holds {-2, -1, 1, 2}, not ternary values, and runs on its own i2s kernels only. A TQ2_0 /
# TQ1_0 tensor whose blocks share one scale runs the I2_S pair instead (ONE_SCALE_KERNELS, `kernel_pairs`).
FAMILY_KERNELS: dict[tuple[str, str], tuple[str, str]] = {
    ("i2s", FORMAT_I2S): ("i2s_gemv", "i2s_gemm"),
    ("i2s", FORMAT_TQ2_0): ("i2s_blk_gemv", "i2s_blk_gemm"),
    ("i2s", FORMAT_TQ1_0): ("i2s_blk_gemv", "i2s_blk_gemm"),
    ("i2s", FORMAT_BITNET32): ("i2s_b32_gemv", "i2s_b32_gemm"),
    ("i2s", FORMAT_QK256): ("i2s_qk256_gemv", "i2s_qk256_gemm"),
    **{
        (family, fmt): (f"{family}_gemv", f"{family}_gemm")
        for family in ("tl1", "tl2")
        for fmt in (FORMAT_I2S, FORMAT_TQ2_0, FORMAT_TQ1_0, FORMAT_BITNET32)
    },
}
ONE_SCALE_KERNELS = FAMILY_KERNELS[("i2s", FORMAT_I2S)]


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


def family_of(kernel_id: str) -> str:
    """The kernel family ("i2s", "tl1", "tl2") a ternary kernel id belongs to."""
    return kernel_id.split("_", 1)[0]


def kernel_pairs(family: str, fmt: str) -> tuple[tuple[str, str], ...]:
    """Every (GEMV id, GEMM id) that `family` runs a matrix of weight format `fmt` with."""
    pair = FAMILY_KERNELS[(family, fmt)]
    if family == "i2s" and fmt in ONE_SCALE_FORMATS:
        return (pair, ONE_SCALE_KERNELS)
    return (pair,)


def format_kernels(fmt: str) -> set[str]:
    """Every ternary kernel id that can run a matrix of weight format `fmt`."""
    return {
        kid for (family, f) in FAMILY_KERNELS if f == fmt for pair in kernel_pairs(family, f) for kid in pair
    }


def matrix_shapes(model: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(rows, cols) of a layer's ternary matrices in forward order, from the receipt's model facts."""
    head_dim = int(model["head_dim"])
    shapes = layer_matrix_shapes(
        int(model["hidden"]),
        int(model["ffn"]),
        int(model["n_heads"]) * head_dim,
        int(model["n_kv_heads"]) * head_dim,
    )
    return [shapes[name] for name in LAYER_MATRICES]


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


def per_kernel_expectations(
    model: Mapping[str, Any], work: Workload, families: Mapping[tuple[int, int], str]
) -> list[Expectation]:
    """Exact counters of the ternary kernel ids when the family of every matrix shape is known.

    The kernel choice is per shape (`kernel_choice.per_shape`), so each layer's seven matrices split between
    the families' ids exactly: a shape's matrices add their rows and MACs to that family's GEMV (decode) and
    GEMM (prefill) for this model's weight format. Where a family has two pairs for the format (one scale
    per tensor or per block, `kernel_pairs`), the tensors split between them and the pair's ids are held to
    the totals together.
    """
    n_layers = int(model["n_layers"])
    fmt = str(model["format"])
    totals: dict[tuple[str, ...], list[int]] = {}
    for rows, cols in matrix_shapes(model):
        pairs = kernel_pairs(families[(rows, cols)], fmt)
        for ids, forwards, tokens in (
            (tuple(p[0] for p in pairs), work.decode_steps, work.decode_steps),
            (tuple(p[1] for p in pairs), work.prefill_forwards, work.prefill_tokens),
        ):
            total = totals.setdefault(ids, [0, 0, 0])
            total[0] += n_layers * forwards
            total[1] += n_layers * rows * tokens
            total[2] += n_layers * rows * cols * tokens
    return [
        Expectation("+".join(ids), ids, calls=_exact(c), rows=_exact(r), elements=_exact(e))
        for ids, (c, r, e) in sorted(totals.items())
        if c > 0
    ]
