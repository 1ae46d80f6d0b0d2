"""The BitNet b1.58 transformer: weights prepared once, buffers allocated once, prefill (GEMM), decode (GEMV).

Per layer: RMSNorm(attn_norm) -> int8 -> Q, K, V -> RoPE -> GQA attention over the KV cache ->
RMSNorm(attn_sub_norm) -> int8 -> attn_output -> +x -> RMSNorm(ffn_norm) -> int8 -> act(gate) * up ->
RMSNorm(ffn_sub_norm) -> int8 -> ffn_down -> +x. Then RMSNorm(output_norm) and the tied embedding for logits.
Every step is a numba kernel that updates `Model.trace`; decode allocates no arrays.

`Model._forward` calls its kernels through a `_Kernels` table named by profile step. Decode and prefill differ
only in their table (GEMV or GEMM projections); a profiled decode runs the same forward pass over a copy of
the decode table whose calls are timed (engine/profiling.py). Where every matrix runs the one-scale i2s
layout, decode runs each layer as one compiled call of the same kernels (engine/kernels/decode_block.py);
a decode profiled by kernel runs its layers step by step, so that each step can be timed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from engine import kernel_choice
from engine.config import ModelConfig
from engine.constants import LAYER_MATRICES
from engine.errors import EngineError, check_choice
from engine.kernels import matmul, matvec, quantize_activations
from engine.kernels.actquant_blocks import QK_K, matvec_blocks, quantize_blocks
from engine.kernels.aligned import aligned_zeros
from engine.kernels.cpu import select_logits
from engine.kernels.decode_block import DECODE_BLOCKS, NO_PLAN
from engine.kernels.ops import (
    attention_gqa,
    embed_lookup,
    fp32_logits,
    relu2_gate,
    relu2_gate_tokens,
    residual_add,
    rmsnorm,
    rmsnorm_tokens,
    rope_neox,
    silu_gate,
    silu_gate_tokens,
)
from engine.loader import ModelFile, load_file
from engine.pages import advise
from engine.profiling import TimedKernels
from engine.tokenizer import Tokenizer
from engine.trace import Trace
from engine.weights import Projection, Weights, load_weights, select_kernels

KERNEL_FAMILIES = ("i2s", "tl1", "tl2")
KERNEL_MODES = ("auto", *KERNEL_FAMILIES)
LOGITS_MODES = ("int8", "f32")
# "token": one int8 scale per token (bitnet.cpp, the fast path). "block256": one scale per 256 values, as
# upstream llama.cpp quantizes activations for TQ1_0/TQ2_0 (Q8_K); a slow path kept for parity runs.
ACT_QUANT_MODES = ("token", "block256")


class _Buffers:
    """Activations of `n` tokens, a row each: decode owns one set (n = 1), prefill one per prompt length.

    The int8 rows the ternary kernels read start on cache lines (aligned_zeros).
    """

    def __init__(self, n: int, hidden: int, kv: int, ffn: int) -> None:
        f32 = np.float32
        self.n = n
        self.x = np.zeros((n, hidden), f32)  # the residual stream
        self.xn = np.zeros((n, hidden), f32)  # RMSNorm of x (or of att): input of the hidden-wide projections
        self.q_h = aligned_zeros((n, hidden), np.int8)  # xn in int8, one scale per token: q_h = xn * s_h
        self.s_h = np.zeros(n, f32)  # those scales
        self.q = np.zeros((n, hidden), f32)  # queries: n_heads * head_dim per token
        self.k = np.zeros((n, kv), f32)  # keys of these tokens: n_kv_heads * head_dim, copied into the cache
        self.v = np.zeros((n, kv), f32)  # values of these tokens, likewise
        self.att = np.zeros((n, hidden), f32)  # attention output, heads side by side
        self.proj = np.zeros((n, hidden), f32)  # attn_output or ffn_down output, added to x
        self.gate = np.zeros((n, ffn), f32)  # ffn_gate output
        self.up = np.zeros((n, ffn), f32)  # ffn_up output
        self.act = np.zeros((n, ffn), f32)  # act(gate) * up
        self.act_n = np.zeros((n, ffn), f32)  # RMSNorm of act: input of ffn_down
        self.q_f = aligned_zeros((n, ffn), np.int8)  # act_n in int8: q_f = act_n * s_f
        self.s_f = np.zeros(n, f32)  # those scales


# ---------------------------------------------------------------- projections
# Each takes (projection, float input [n, cols], its int8 form [n, cols], the int8 scales [n], out [n, rows],
# counts): token mode projects the int8 form, block256 quantizes the float input itself.
def _gemv(p: Projection, x, q, s, out, counts) -> None:
    """Decode: out = W q / s for one token; the tensor's scale divides the activation scale."""
    matvec(p.matrix, q[0], s[0] if p.scale == 1.0 else s[0] / p.scale, out[0], counts)


def _gemm(p: Projection, x, q, s, out, counts) -> None:
    """Prefill: out[t] = W q[t] / s[t] for every token in one kernel call."""
    matmul(p.matrix, q, s if p.scale == 1.0 else s / p.scale, out, counts)


class _Q8KProjection:
    """act_quant="block256": quantize the float input per 256 values (Q8_K), then one block GEMV per token."""

    def __init__(self) -> None:
        # (tokens, cols) -> Q8_K values int8 [tokens, cols] and block scales float32 [tokens, cols / 256]
        self._scratch: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, p: Projection, x, q, s, out, counts) -> None:
        m = p.blocks
        n = out.shape[0]
        key = (n, m.cols)
        if key not in self._scratch:
            self._scratch[key] = (np.zeros((n, m.cols), np.int8), np.zeros((n, m.cols // QK_K), np.float32))
        qb, db = self._scratch[key]
        quantize_blocks(x, qb, db, counts)
        for t in range(n):
            matvec_blocks(m, qb[t], db[t], out[t], counts)
            if p.scale != 1.0:
                out[t] *= np.float32(p.scale)


# ---------------------------------------------------------------- the kernel table
@dataclass(frozen=True, slots=True)
class _Kernels:
    """What a forward pass calls, named as its profile charges it: three stages, then the steps of a layer.

    The stages `layer` and `logits` are Model methods taken unbound and called with the model first: a table
    of bound methods would tie the model into a reference cycle and hold its arrays until the cycle collector
    runs. The seven projections all run the same function, under their matrix names.
    """

    embed: Callable  # embed_lookup
    layer: Callable  # Model._layer, or Model._layer_block in decode
    logits: Callable  # Model._logits_int8 or Model._logits_f32
    rmsnorm: Callable
    act_quant_i8: Callable
    attn_q: Callable
    attn_k: Callable
    attn_v: Callable
    rope_neox: Callable
    attention_gqa: Callable
    attn_output: Callable
    residual_add: Callable
    ffn_gate: Callable
    ffn_up: Callable
    gate_act: Callable
    ffn_down: Callable


def _kernels(
    project: Callable, gate_act: Callable, norm: Callable, logits: Callable, layer: Callable | None = None
) -> _Kernels:
    """The table of one kind of pass: `project` runs all seven projections, `gate_act` is the FFN gate,
    `norm` the RMSNorm (prefill takes the versions that spread tokens over the threads); `layer` runs a
    layer (Model._layer, step by step through this table, when None)."""
    return _Kernels(
        embed=embed_lookup,
        layer=layer or Model._layer,
        logits=logits,
        rmsnorm=norm,
        act_quant_i8=quantize_activations,
        rope_neox=rope_neox,
        attention_gqa=attention_gqa,
        residual_add=residual_add,
        gate_act=gate_act,
        **dict.fromkeys(LAYER_MATRICES, project),
    )


# ---------------------------------------------------------------- the model
class Model:
    """A loaded model: call `warmup()` once, then `prefill(prompt)` and `decode(token)` repeatedly."""

    def __init__(
        self,
        file: ModelFile,
        tokenizer: Tokenizer,
        weights: Weights,
        kernel_selection: kernel_choice.Selection,
        logits_mode: str,
        act_quant: str,
        load_seconds: float,
    ) -> None:
        cfg = file.config
        self.file = file
        self.config = cfg
        self.tokenizer = tokenizer
        self.kernel_selection = kernel_selection
        self.logits_mode = logits_mode
        self.act_quant = act_quant
        self.load_seconds = load_seconds
        self.trace = Trace()
        self.pos = 0  # the next token's position: how many the KV cache holds
        self._matrices = {
            f"blk.{i}.{name}.weight": p.matrix
            for i, layer in enumerate(weights.layers)
            for name, p in layer.projections().items()
        }
        self.kernel_choices = {name: m.gemv_id for name, m in self._matrices.items()}
        self.kernel_family = "+".join(sorted({m.kernel for m in self._matrices.values()}))
        self._logits_i8, variant = select_logits(cfg.hidden)
        self.logits_variant = variant if logits_mode == "int8" else "portable"
        # the choice whose plan select_logits bound to the AVX2 logits kernel (same process, same key)
        self._logits_prefetch = (
            kernel_choice.prefetch_choice("logits", cfg.hidden) if self.logits_variant == "avx2" else None
        )
        matrix_bytes = sum(m.nbytes_read for m in self._matrices.values())
        self.weight_bytes_per_token = matrix_bytes + self._logit_bytes(weights)

        # weights
        self._layers = weights.layers
        self._embedding = weights.embedding
        self._lut = weights.lut
        self._output_norm = weights.output_norm
        self._emb_i8 = weights.embedding_i8
        self._eps = float(cfg.rms_eps)

        # buffers
        self._dec = self._buffers(1)  # decode's activations; the logits stage's scratch in prefill too
        self._prefill_bufs: _Buffers | None = None  # prefill's, reallocated when the prompt length changes
        self._tok = np.zeros(1, np.int64)  # decode's token id, as the array embed_lookup takes
        self._kv = _kv_cache(cfg)  # per layer: (keys, values), each [n_kv_heads, context, head_dim]
        # RoPE: cos and sin of every position's rotation angles, [context, head_dim / 2] each
        self._cos, self._sin = _rope_tables(cfg.context_length, cfg.head_dim, cfg.rope_theta)
        self._scores = np.zeros((cfg.n_heads, cfg.context_length), np.float32)  # attention weights per head
        self._u8 = np.zeros(cfg.hidden, np.uint8)  # int8 logits scratch: the hidden state + 128 (VNNI kernel)
        self._logits = np.zeros(cfg.vocab_size, np.float32)  # what prefill and decode return, reused

        # the kernels of decode and of prefill
        relu2 = self._relu2 = cfg.ffn_act == "relu2"
        gate, gate_tokens = (relu2_gate, relu2_gate_tokens) if relu2 else (silu_gate, silu_gate_tokens)
        logits = Model._logits_int8 if logits_mode == "int8" else Model._logits_f32
        gemv, gemm = (_gemv, _gemm) if act_quant == "token" else (_Q8KProjection(),) * 2
        self._decode_steps = _kernels(gemv, gate, rmsnorm, logits)
        self._prefill_ops = _kernels(gemm, gate_tokens, rmsnorm_tokens, logits)
        # the GEMV variant of the compiled decode block, or None: decode runs its layers step by step
        self.decode_block = self._block_variant()
        self._decode_blocks: _Kernels | None = None
        if self.decode_block is not None:
            self._block_fn = DECODE_BLOCKS[self.decode_block]
            self._block_args = self._block_arguments()
            self._decode_blocks = _kernels(gemv, gate, rmsnorm, logits, Model._layer_block)
        self._decode_ops = self._decode_blocks or self._decode_steps

    def _block_variant(self) -> str | None:
        """The GEMV variant of engine.kernels.decode_block that runs this model's decode layers: all matrices
        must be one-scale i2s on one variant, activations quantized per token. None: step by step."""
        variants = {m.variant for m in self._matrices.values()}
        one_scale = all(m.gemv_id == "i2s_gemv" and m.scale is not None for m in self._matrices.values())
        if self.act_quant != "token" or not one_scale or len(variants) != 1:
            return None
        variant = variants.pop()
        return variant if variant in DECODE_BLOCKS else None

    def _block_arguments(self) -> list[tuple]:
        """Per layer, the decode block's arguments before (pos, eps, relu2, counts): buffers, norms, the
        seven matrices' codes, scales, output scales and prefetch plans, the KV cache, RoPE tables, shape."""
        b, cfg = self._dec, self.config
        # in the order engine.kernels.decode_block._block unpacks them
        bufs = (b.x, b.xn, b.q_h, b.s_h, b.q, b.k, b.v, b.att, b.proj)
        bufs += (b.gate, b.up, b.act, b.act_n, b.q_f, b.s_f)
        rope = (self._cos, self._sin, self._scores)
        shape = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim)
        out = []
        for layer, kv in zip(self._layers, self._kv, strict=True):
            projections = list(layer.projections().values())
            matrices = [p.matrix for p in projections]
            out.append(
                (
                    bufs,
                    (layer.attn_norm, layer.attn_sub_norm, layer.ffn_norm, layer.ffn_sub_norm),
                    tuple(m.arrays["w"] for m in matrices),
                    tuple(np.float32(m.scale) for m in matrices),
                    tuple(np.float32(p.scale) for p in projections),
                    tuple(NO_PLAN if m.prefetch is None else m.prefetch.plan for m in matrices),
                    kv,
                    rope,
                    shape,
                )
            )
        return out

    def _logit_bytes(self, weights: Weights) -> int:
        """Bytes of the embedding one logits call reads (the int8 row sums only on the VNNI path)."""
        e = weights.embedding_i8
        if e is None:
            return weights.embedding.nbytes
        sums = e.row_sums.nbytes if self.logits_variant == "avx512vnni" else 0
        return e.values.nbytes + e.scales.nbytes + sums

    def _buffers(self, n: int) -> _Buffers:
        cfg = self.config
        return _Buffers(n, cfg.hidden, cfg.n_kv_heads * cfg.head_dim, cfg.ffn)

    # ---------------------------------------------------------------- public API
    def matrix_kernel_ids(self) -> dict[str, tuple[str, str]]:
        """Matrix tensor name -> (gemv id, gemm id) of the kernels that run it (prefill runs the GEMM)."""
        return {name: (m.gemv_id, m.gemm_id) for name, m in self._matrices.items()}

    def kernel_variants(self) -> dict[str, str]:
        """Kernel id -> instruction-set path it runs on here ("avx512vnni", "avx512bw" or "portable").

        For the receipt: which CPU-specific variant (or the portable fallback) produced the counted calls.
        """
        out = {}
        for m in self._matrices.values():
            out[m.gemv_id] = out[m.gemm_id] = m.variant
        out["logits_i8" if self.logits_mode == "int8" else "fp32_logits"] = self.logits_variant
        return out

    def prefetch_choices(self) -> list[kernel_choice.PrefetchChoice]:
        """The software prefetch distances this model's AVX2 kernels run with, one per kind and row width
        (measured on this host by engine.kernel_choice.prefetch_choice), with the timings behind them;
        empty when no kernel of this model runs on the AVX2 path."""
        choices = {id(m.prefetch): m.prefetch for m in self._matrices.values() if m.prefetch is not None}
        if self._logits_prefetch is not None:
            choices[id(self._logits_prefetch)] = self._logits_prefetch
        return list(choices.values())

    def set_decode_block(self, enabled: bool) -> None:
        """Run decode's layers as one compiled call each (the default where `decode_block` names a variant)
        or step by step through the kernel table (for A/B timing of the two)."""
        if enabled and self._decode_blocks is None:
            raise EngineError("no decode block: this model's matrices do not all run one-scale i2s")
        self._decode_ops = self._decode_blocks if enabled else self._decode_steps

    def reset(self) -> None:
        """Empty the KV cache (positions restart at 0; stale entries are never read)."""
        self.pos = 0

    def warmup(self) -> float:
        """Run every kernel of both paths once (compiling or loading numba's cache); return the seconds taken.

        Afterwards the trace and the KV cache are empty again.
        """
        start = time.perf_counter()
        tokens = [min(1, self.config.vocab_size - 1)] * min(2, self.config.context_length - 1)
        self.reset()
        self.prefill(tokens)
        self.decode(tokens[0])
        seconds = time.perf_counter() - start
        self.reset()
        self.trace.reset()
        return seconds

    def prefill(
        self, tokens: Sequence[int], profile: dict | None = None, by_kernel: bool = False
    ) -> np.ndarray:
        """Run the prompt through GEMM kernels (one call per matrix for all tokens); logits of the last one.

        The tokens are appended at the current position. The returned array is the model's logits buffer,
        overwritten by the next call. `profile` and `by_kernel` as for `decode`.
        """
        ids = self._check_tokens(tokens)
        if self._prefill_bufs is None or self._prefill_bufs.n != ids.size:
            self._prefill_bufs = self._buffers(ids.size)
        self._run(ids, self._prefill_bufs, self._prefill_ops, profile, by_kernel)
        return self._logits

    def decode(self, token: int, profile: dict | None = None, by_kernel: bool = False) -> np.ndarray:
        """One token through GEMV kernels at the next position; returns the logits buffer (reused next call).

        `profile`, when given, receives stage seconds "embed", "forward", "logits" and "layers" (per layer);
        with `by_kernel` also "kernels": seconds per step of the layer (summed over layers), the Python
        dispatch between the kernel calls included in the step that follows it. With `by_kernel` the layers
        run step by step even where decode otherwise runs each as one compiled call (`decode_block`).
        """
        if self.pos >= self.config.context_length:
            raise EngineError(f"context full: {self.config.context_length} tokens; reset the model")
        if not 0 <= token < self.config.vocab_size:
            raise EngineError(f"token id {token} outside the vocabulary (0..{self.config.vocab_size - 1})")
        self._tok[0] = token
        ops = self._decode_steps if by_kernel else self._decode_ops
        self._run(self._tok, self._dec, ops, profile, by_kernel)
        return self._logits

    def _run(
        self, ids: np.ndarray, b: _Buffers, ops: _Kernels, profile: dict | None, by_kernel: bool
    ) -> None:
        """The forward pass over `ops`, or over its timed copy when a `profile` dict is to be filled."""
        if profile is None:
            self._forward(ids, b, ops)
        else:
            timed = TimedKernels(ops, by_kernel)
            self._forward(ids, b, timed.ops)
            profile.update(timed.report())

    def _check_tokens(self, tokens: Sequence[int]) -> np.ndarray:
        ids = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise EngineError("prefill needs at least one token")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise EngineError(f"token ids must lie in 0..{self.config.vocab_size - 1}")
        if self.pos + ids.size > self.config.context_length:
            raise EngineError(
                f"{ids.size} tokens at position {self.pos} exceed the context of {self.config.context_length}"
            )
        return ids

    # ---------------------------------------------------------------- forward pass
    def _forward(self, ids: np.ndarray, b: _Buffers, ops: _Kernels) -> None:
        """Tokens `ids` at positions pos, pos + 1, ... through every layer; the last one's logits."""
        n = ids.shape[0]
        ops.embed(self._embedding, self._lut, ids, b.x, self.trace.counts)
        for i in range(len(self._layers)):
            ops.layer(self, i, b, ops)
        ops.logits(self, b.x[n - 1 : n])
        self.pos += n

    def _layer(self, i: int, b: _Buffers, ops: _Kernels) -> None:
        """Transformer block i over b.x: attention, then the feed-forward network, each added to b.x."""
        counts, cfg, eps, pos = self.trace.counts, self.config, self._eps, self.pos
        layer, (k_cache, v_cache) = self._layers[i], self._kv[i]
        # attention
        ops.rmsnorm(b.x, layer.attn_norm, eps, b.xn, counts)
        ops.act_quant_i8(b.xn, b.q_h, b.s_h, counts)
        ops.attn_q(layer.attn_q, b.xn, b.q_h, b.s_h, b.q, counts)
        ops.attn_k(layer.attn_k, b.xn, b.q_h, b.s_h, b.k, counts)
        ops.attn_v(layer.attn_v, b.xn, b.q_h, b.s_h, b.v, counts)
        ops.rope_neox(b.q, cfg.n_heads, cfg.head_dim, pos, self._cos, self._sin, counts)
        ops.rope_neox(b.k, cfg.n_kv_heads, cfg.head_dim, pos, self._cos, self._sin, counts)
        ops.attention_gqa(b.q, b.k, b.v, k_cache, v_cache, pos, cfg.n_heads, self._scores, b.att, counts)
        ops.rmsnorm(b.att, layer.attn_sub_norm, eps, b.xn, counts)
        ops.act_quant_i8(b.xn, b.q_h, b.s_h, counts)
        ops.attn_output(layer.attn_output, b.xn, b.q_h, b.s_h, b.proj, counts)
        ops.residual_add(b.x, b.proj, counts)
        # feed-forward
        ops.rmsnorm(b.x, layer.ffn_norm, eps, b.xn, counts)
        ops.act_quant_i8(b.xn, b.q_h, b.s_h, counts)
        ops.ffn_gate(layer.ffn_gate, b.xn, b.q_h, b.s_h, b.gate, counts)
        ops.ffn_up(layer.ffn_up, b.xn, b.q_h, b.s_h, b.up, counts)
        ops.gate_act(b.gate, b.up, b.act, counts)
        ops.rmsnorm(b.act, layer.ffn_sub_norm, eps, b.act_n, counts)
        ops.act_quant_i8(b.act_n, b.q_f, b.s_f, counts)
        ops.ffn_down(layer.ffn_down, b.act_n, b.q_f, b.s_f, b.proj, counts)
        ops.residual_add(b.x, b.proj, counts)

    def _layer_block(self, i: int, b: _Buffers, ops: _Kernels) -> None:
        """`_layer` for the one decode token, as one compiled call of the same kernels (decode's buffers)."""
        self._block_fn(*self._block_args[i], self.pos, self._eps, self._relu2, self.trace.counts)

    def _logits_int8(self, x_last: np.ndarray) -> None:
        """RMSNorm(output_norm) of the last hidden state [1, hidden], int8, dot every int8 embedding row."""
        d, e, counts = self._dec, self._emb_i8, self.trace.counts
        rmsnorm(x_last, self._output_norm, self._eps, d.xn, counts)
        quantize_activations(d.xn, d.q_h, d.s_h, counts)
        self._logits_i8(e.values, e.scales, e.row_sums, d.q_h[0], d.s_h[0], self._u8, self._logits, counts)

    def _logits_f32(self, x_last: np.ndarray) -> None:
        """RMSNorm(output_norm) of the last hidden state [1, hidden], dot every stored embedding row."""
        d, counts = self._dec, self.trace.counts
        rmsnorm(x_last, self._output_norm, self._eps, d.xn, counts)
        fp32_logits(self._embedding, self._lut, d.xn[0], self._logits, counts)


# ---------------------------------------------------------------- loading
def load_model(
    path: str | os.PathLike[str],
    *,
    kernel: str | Mapping[tuple[int, int], str] = "auto",
    threads: int | None = None,
    strict: bool | None = None,
    logits: str = "int8",
    act_quant: str = "token",
    retune: bool = False,
) -> Model:
    """Load, validate and prepare a GGUF model: matrices in the chosen kernel layouts, buffers allocated.

    `kernel`: a mode of KERNEL_MODES, or the family of each (rows, cols) matrix shape. `retune` (kernel
    "auto" only) times the kernel families again instead of reading this machine's cached verdicts
    (engine.kernel_choice).
    """
    start = time.perf_counter()
    if not isinstance(kernel, Mapping):
        check_choice("kernel", kernel, KERNEL_MODES)
    check_choice("logits mode", logits, LOGITS_MODES)
    check_choice("activation quantization", act_quant, ACT_QUANT_MODES)
    if retune and (isinstance(kernel, Mapping) or kernel != "auto"):
        raise EngineError(f"retuning times the families for kernel 'auto'; kernel {kernel!r} is fixed")
    set_threads(threads)
    mf = load_file(path, strict=strict)
    tokenizer = Tokenizer.from_metadata(mf.gguf.metadata)
    selection = select_kernels(mf, kernel, retune)
    weights = load_weights(mf, selection, int8_logits=logits == "int8", block256=act_quant == "block256")
    return Model(mf, tokenizer, weights, selection, logits, act_quant, time.perf_counter() - start)


def set_threads(threads: int | None) -> None:
    """Apply a thread count to numba's parallel kernels (None keeps numba's default)."""
    if threads is None:
        return
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= threads <= limit:
        raise EngineError(f"--threads must be between 1 and {limit} (got {threads})")
    numba.set_num_threads(threads)


def _kv_cache(cfg: ModelConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer (keys, values) [n_kv, context, head_dim]: views of one array of lazily mapped zero pages.

    Memory grows with the positions used. A KV head's positions follow one another, so attention streams
    each head's keys and values in order (about a fifth faster at position 600 than with the KV heads of a
    position side by side, whose 512-byte rows 2560 bytes apart no hardware prefetcher followed). The
    region opts out of transparent huge pages, which numpy requests for large arrays: one touched key
    would otherwise map 2 MB.
    """
    cache = np.zeros((cfg.n_layers, 2, cfg.n_kv_heads, cfg.context_length, cfg.head_dim), np.float32)
    advise(cache, "MADV_NOHUGEPAGE")
    return [(cache[i, 0], cache[i, 1]) for i in range(cfg.n_layers)]


def _rope_tables(context: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    freqs = float(theta) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(context, dtype=np.float64)[:, None] * freqs[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
