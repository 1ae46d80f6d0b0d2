"""Exact execution trace: every kernel adds to its own row of a shared counter array when it runs.

The counters live in one int64 array that each numba kernel receives and updates itself, so a kernel id can
only appear in the trace because that kernel's body executed. Reading and resetting are O(number of ids).
"""

from dataclasses import dataclass, field

import numpy as np

# Stable kernel ids. The order is the row index in Trace.counts; append new ids, never reorder.
KERNEL_IDS: tuple[str, ...] = (
    "act_quant_i8",  # per-token absmax int8 activation quantization
    "i2s_gemv",  # ternary x int8, one per-tensor scale (microsoft I2_S, zero copy)
    "i2s_gemm",
    "i2s_blk_gemv",  # ternary x int8 with per-block scales (TQ2_0 / TQ1_0 repacked at load)
    "i2s_blk_gemm",
    "i2s_qk256_gemv",  # 2-bit codes through the table [-2, -1, 1, 2], no scale
    "i2s_qk256_gemm",
    "i2s_b32_gemv",  # BitNet-32: 32-value blocks with an fp16 scale each
    "i2s_b32_gemm",
    "tl1_gemv",  # weight pairs -> 4-bit index into a 9-entry table per activation pair
    "tl1_gemm",
    "tl2_gemv",  # weight triples -> sign + 4-bit magnitude index into a 27-entry table per activation triple
    "tl2_gemm",
    "embed_lookup",  # token rows of the embedding to float32
    "rmsnorm",
    "rope_neox",
    "attention_gqa",  # grouped-query attention over the KV cache, softmax included
    "relu2_gate",  # relu(gate)^2 * up
    "silu_gate",  # silu(gate) * up
    "residual_add",
    "logits_i8",  # logits through the cached int8 copy of the tied embedding
    "fp32_logits",  # logits through the float embedding (fallback path, labelled as such)
    "act_quant_q8k",  # llama.cpp-style activation quantization, one scale per 256 values (parity mode)
    "i2s_q8k_gemv",  # ternary int8 values x Q8_K activations with per-block scales (parity mode)
)
KERNEL_INDEX: dict[str, int] = {kid: i for i, kid in enumerate(KERNEL_IDS)}

# Columns of Trace.counts.
CALLS, ROWS, ELEMENTS = 0, 1, 2


def kid(name: str) -> int:
    """Row index of a kernel id; for use as a compile-time constant in kernel modules."""
    return KERNEL_INDEX[name]


@dataclass
class Trace:
    """Counters per kernel id: calls, rows produced (output rows x tokens), elements (MACs for matmuls)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros((len(KERNEL_IDS), 3), dtype=np.int64))

    def reset(self) -> None:
        self.counts[:] = 0

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Ids that ran (calls > 0) with their counters, in registry order."""
        return {
            kid_: {"calls": int(row[CALLS]), "rows": int(row[ROWS]), "elements": int(row[ELEMENTS])}
            for kid_, row in zip(KERNEL_IDS, self.counts, strict=True)
            if row[CALLS] > 0
        }

    def calls(self) -> dict[str, int]:
        return {k: v["calls"] for k, v in self.snapshot().items()}
