"""Adapter: run a loaded Model with llama.cpp's per-256-block (Q8_K) activation quantization.

`use_block_activations(model)` makes every ternary projection of `model` quantize its float input in
256-value blocks (engine.kernels.actquant_blocks) instead of per token, so the engine computes what upstream
llama.cpp computes for TQ1_0/TQ2_0 weights. Until `load_model(..., act_quant="block256")` exists in
engine/model.py, this hooks `Model._project`: the float input of each projection is the buffer the
per-token quantizer just read (`xn`, or `act_n` for ffn_down), which is quantized again in blocks here.
The per-token int8 result is then unused (its `act_quant_i8` trace row still counts), and the projections
do not appear in the trace: this mode is for parity runs, not for receipts.
"""

from __future__ import annotations

import types

import numpy as np

from engine.constants import LAYER_MATRICES
from engine.kernels.actquant_blocks import QK_K, BlockMatrix, block_matrix, matvec_blocks, quantize_blocks

ACT_QUANT_MODES = ("token", "block256")


def use_block_activations(model) -> None:  # noqa: ANN001 - engine.model.Model, imported lazily by callers
    """Switch `model` (an engine.model.Model) to block activation quantization, in place."""
    mf = model.file
    mats: list[dict[str, BlockMatrix]] = []
    for i in range(model.config.n_layers):
        per_layer = {}
        for name in LAYER_MATRICES:
            tname = f"blk.{i}.{name}.weight"
            t = mf.tensor(tname)
            rows, cols = t.shape
            per_layer[name] = block_matrix(mf.flavor(tname), t.data, rows, cols)
        mats.append(per_layer)
    by_layer = {id(layer): mats[i] for i, layer in enumerate(model._layers)}

    def _project(self, layer, name, q, s, out, b, gemm):  # noqa: ANN001 - Model._project's signature
        m = by_layer[id(layer)][name]
        src = b.act_n if name == "ffn_down" else b.xn
        n = out.shape[0]
        qb = np.empty((n, m.cols), np.int8)
        db = np.empty((n, m.cols // QK_K), np.float32)
        quantize_blocks(src[:n], qb, db)
        scale = np.float32(layer.scales[name])
        for t in range(n):
            matvec_blocks(m, qb[t], db[t], out[t])
            if scale != 1.0:
                out[t] *= scale

    model._project = types.MethodType(_project, model)
    model.act_quant = "block256"
