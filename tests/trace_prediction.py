"""The exact trace of a run, predicted from the model shape alone: tests hold the engine counters to it.

`expected_counts` lists, kernel by kernel, the calls, rows and elements that one prefill and some decode
steps add to `Trace.counts`; tests/test_trace_counts.py compares it with real runs to the unit and
tests/test_verify.py with the verifier's per-receipt expectations (harness/expectations.py).
"""

from collections.abc import Mapping

from engine.config import ModelConfig
from engine.constants import layer_matrix_shapes


def expected_counts(
    config: ModelConfig,
    prompt_tokens: int,
    decode_steps: int,
    kernel_ids: Mapping[str, tuple[str, str]],
    logits: str = "int8",
) -> dict[str, dict[str, int]]:
    """The exact trace (as `Trace.snapshot()`) of one prefill of `prompt_tokens` then `decode_steps` decodes.

    `kernel_ids` maps every matrix tensor name (`blk.N.attn_q.weight`, ...) to its (gemv id, gemm id):
    `model.matrix_kernel_ids()`. Starts from an empty cache and trace (as after `warmup()`).
    """
    h, f, v = config.hidden, config.ffn, config.vocab_size
    kv = config.n_kv_heads * config.head_dim
    shapes = layer_matrix_shapes(h, f, config.n_heads * config.head_dim, kv)
    totals: dict[str, list[int]] = {}

    def add(kid_: str, calls: int, rows: int, elements: int) -> None:
        row = totals.setdefault(kid_, [0, 0, 0])
        row[0] += calls
        row[1] += rows
        row[2] += elements

    passes = ([(prompt_tokens, 0, True)] if prompt_tokens else []) + [
        (1, prompt_tokens + i, False) for i in range(decode_steps)
    ]
    act = "relu2_gate" if config.ffn_act == "relu2" else "silu_gate"
    for t, pos0, gemm in passes:
        add("embed_lookup", 1, t, t * h)
        for i in range(config.n_layers):
            add("rmsnorm", 4, 4 * t, t * (3 * h + f))
            add("act_quant_i8", 4, 4 * t, t * (3 * h + f))
            add("rope_neox", 2, 2 * t, t * (config.n_heads + config.n_kv_heads) * config.head_dim)
            attended = t * pos0 + t * (t + 1) // 2
            add("attention_gqa", 1, t, 2 * config.n_heads * config.head_dim * attended)
            add(act, 1, t, t * f)
            add("residual_add", 2, 2 * t, 2 * t * h)
            for name, (rows, cols) in shapes.items():
                gemv_id, gemm_id = kernel_ids[f"blk.{i}.{name}.weight"]
                add(gemm_id if gemm else gemv_id, 1, rows * t, rows * cols * t)
        add("rmsnorm", 1, 1, h)
        if logits == "int8":
            add("act_quant_i8", 1, 1, h)
            add("logits_i8", 1, v, v * h)
        else:
            add("fp32_logits", 1, v, v * h)
    return {k: {"calls": c, "rows": r, "elements": e} for k, (c, r, e) in totals.items()}
