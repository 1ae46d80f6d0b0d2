"""The BitNet b1.58 transformer: weights prepared once, buffers allocated once, prefill (GEMM), decode (GEMV).

Per layer: RMSNorm(attn_norm) -> int8 -> Q, K, V -> RoPE -> GQA attention over the KV cache ->
RMSNorm(attn_sub_norm) -> int8 -> attn_output -> +x -> RMSNorm(ffn_norm) -> int8 -> act(gate) * up ->
RMSNorm(ffn_sub_norm) -> int8 -> ffn_down -> +x. Then RMSNorm(output_norm) and the tied embedding for logits.
Every step is a numba kernel that updates `Model.trace`; decode allocates no arrays.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from engine import kernel_choice
from engine.config import ModelConfig
from engine.constants import LAYER_MATRICES, LAYER_NORMS, GGMLType
from engine.errors import EngineError, UnsupportedModelError, check_choice
from engine.kernels import TernaryMatrix, matmul, matvec, prepare_matrix, quantize_activations
from engine.kernels.actquant_blocks import QK_K, BlockMatrix, block_matrix, matvec_blocks, quantize_blocks
from engine.kernels.cpu import select_logits
from engine.kernels.ops import (
    attention_gqa,
    bf16_lut,
    embed_lookup,
    fp32_logits,
    half_lut,
    quantize_embedding_rows,
    relu2_gate,
    residual_add,
    rmsnorm,
    rope_neox,
    silu_gate,
)
from engine.loader import ModelFile, load_file
from engine.pages import advise, release_mapped_pages
from engine.tokenizer import Tokenizer
from engine.trace import Trace

KERNEL_FAMILIES = ("i2s", "tl1", "tl2")
KERNEL_MODES = ("auto", *KERNEL_FAMILIES)
LOGITS_MODES = ("int8", "f32")
# "token": one int8 scale per token (bitnet.cpp, the fast path). "block256": one scale per 256 values, as
# upstream llama.cpp quantizes activations for TQ1_0/TQ2_0 (Q8_K); a slow path kept for parity runs.
ACT_QUANT_MODES = ("token", "block256")
_EMBED_CHUNK_BYTES = 32 << 20


@dataclass
class _Layer:
    norms: dict[str, np.ndarray]
    mats: dict[str, TernaryMatrix]  # LAYER_MATRICES name -> its execution layout
    scales: dict[str, float]  # optional `.scale` tensors (bitnet arch); 1.0 when absent
    k_cache: np.ndarray
    v_cache: np.ndarray
    block_mats: dict[str, BlockMatrix] | None = None  # act_quant="block256" only: int8 values, block scales


class _Buffers:
    """Activations for `n` tokens; decode owns one set with n = 1, prefill sizes one per prompt length."""

    def __init__(self, n: int, hidden: int, kv: int, ffn: int) -> None:
        f32 = np.float32
        self.n = n
        self.x = np.zeros((n, hidden), f32)  # the residual stream
        self.xn = np.zeros((n, hidden), f32)
        self.q_h = np.zeros((n, hidden), np.int8)
        self.s_h = np.zeros(n, f32)
        self.q_f = np.zeros((n, ffn), np.int8)
        self.s_f = np.zeros(n, f32)
        self.s_adj = np.zeros(n, f32)
        self.q = np.zeros((n, hidden), f32)
        self.k = np.zeros((n, kv), f32)
        self.v = np.zeros((n, kv), f32)
        self.att = np.zeros((n, hidden), f32)
        self.proj = np.zeros((n, hidden), f32)
        self.gate = np.zeros((n, ffn), f32)
        self.up = np.zeros((n, ffn), f32)
        self.act = np.zeros((n, ffn), f32)
        self.act_n = np.zeros((n, ffn), f32)


def _no_mark(step: str) -> None:
    """The default step marker of `Model._layer`: profiling off."""


class _Marks:
    """Seconds per layer step, summed: `mark(step)` charges the time since the previous mark to `step`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = self.seconds.get(step, 0.0) + now - self.last
        self.last = now


class Model:
    """A loaded model: call `warmup()` once, then `prefill(prompt)` and `decode(token)` repeatedly."""

    def __init__(
        self,
        file: ModelFile,
        tokenizer: Tokenizer,
        layers: list[_Layer],
        embedding: np.ndarray,
        output_norm: np.ndarray,
        logits_mode: str,
        kernel_selection: kernel_choice.Selection,
        logits_variant: str = "auto",
    ) -> None:
        cfg = file.config
        self.file = file
        self.config = cfg
        self.tokenizer = tokenizer
        self.trace = Trace()
        self.act_quant = "token"
        self._block_bufs: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.logits_mode = logits_mode
        self.kernel_selection = kernel_selection
        self.kernel_choices: dict[str, str] = {}
        self.gemm_choices: dict[str, str] = {}
        for i, layer in enumerate(layers):
            for name, m in layer.mats.items():
                self.kernel_choices[f"blk.{i}.{name}.weight"] = m.gemv_id
                self.gemm_choices[f"blk.{i}.{name}.weight"] = m.gemm_id
        self.kernel_family = "+".join(sorted({m.kernel for layer in layers for m in layer.mats.values()}))
        self.load_seconds = 0.0
        self.pos = 0
        self._layers = layers
        self._embedding = embedding.view(np.ndarray)  # numba types plain arrays faster than np.memmap
        bf16 = file.tensor("token_embd.weight").ggml_type == GGMLType.BF16
        self._lut = bf16_lut() if bf16 else half_lut()
        self._output_norm = output_norm
        self._eps = float(cfg.rms_eps)
        self._act = relu2_gate if cfg.ffn_act == "relu2" else silu_gate
        self._cos, self._sin = _rope_tables(cfg.context_length, cfg.head_dim, cfg.rope_theta)
        self._scores = np.zeros((cfg.n_heads, cfg.context_length), np.float32)
        self._logits = np.zeros(cfg.vocab_size, np.float32)
        self._tok = np.zeros(1, np.int64)
        self._dec = _Buffers(1, cfg.hidden, cfg.n_kv_heads * cfg.head_dim, cfg.ffn)
        self._prefill_bufs: _Buffers | None = None
        self._emb_q = np.zeros((0, 0), np.int8)
        self._emb_s = np.zeros(0, np.float32)
        self._logits_i8, self.logits_variant = select_logits(cfg.hidden, logits_variant)
        self._emb_sum = np.zeros(0, np.int32)
        self._u8 = np.zeros(cfg.hidden, np.uint8)
        if logits_mode == "int8":
            self._emb_q, self._emb_s, self._emb_sum = _int8_embedding(embedding, self._lut)
        else:
            self.logits_variant = "portable"
        matrix_bytes = sum(m.nbytes_read for layer in layers for m in layer.mats.values())
        logit_bytes = embedding.nbytes
        if logits_mode == "int8":
            logit_bytes = self._emb_q.nbytes + self._emb_s.nbytes
            logit_bytes += self._emb_sum.nbytes if self.logits_variant != "portable" else 0
        self.weight_bytes_per_token = int(matrix_bytes + logit_bytes)

    # ---------------------------------------------------------------- public API
    def matrix_kernel_ids(self) -> dict[str, tuple[str, str]]:
        """Matrix tensor name -> (gemv id, gemm id) of the kernels that run it (prefill runs the GEMM)."""
        return {name: (gemv, self.gemm_choices[name]) for name, gemv in self.kernel_choices.items()}

    def kernel_variants(self) -> dict[str, str]:
        """Kernel id -> instruction-set path it runs on here ("avx512vnni", "avx512bw" or "portable").

        For the receipt: which CPU-specific variant (or the portable fallback) produced the counted calls.
        """
        out = {}
        for layer in self._layers:
            for m in layer.mats.values():
                out[m.gemv_id] = out[m.gemm_id] = m.variant
        out["logits_i8" if self.logits_mode == "int8" else "fp32_logits"] = self.logits_variant
        return out

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

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Run the prompt through GEMM kernels (one call per matrix for all tokens); logits of the last one.

        The tokens are appended at the current position. The returned array is the model's logits buffer,
        overwritten by the next call.
        """
        ids = self._check_tokens(tokens)
        n = len(ids)
        bufs = self._prefill_bufs
        if bufs is None or bufs.n != n:
            cfg = self.config
            bufs = self._prefill_bufs = _Buffers(n, cfg.hidden, cfg.n_kv_heads * cfg.head_dim, cfg.ffn)
        counts = self.trace.counts
        embed_lookup(self._embedding, self._lut, ids, bufs.x, counts)
        for layer in self._layers:
            self._layer(layer, bufs, self.pos, gemm=True)
        self.pos += n
        self._logits_from(bufs.x[n - 1 : n])
        return self._logits

    def decode(self, token: int, profile: dict | None = None, by_kernel: bool = False) -> np.ndarray:
        """One token through GEMV kernels at the next position; returns the logits buffer (reused next call).

        `profile`, when given, receives stage seconds "embed", "forward", "logits" and "layers" (per layer);
        with `by_kernel` also "kernels": seconds per step of the layer (summed over layers), the Python
        dispatch between the kernel calls included in the step that follows it.
        """
        if self.pos >= self.config.context_length:
            raise EngineError(f"context full: {self.config.context_length} tokens; reset the model")
        if not 0 <= token < self.config.vocab_size:
            raise EngineError(f"token id {token} outside the vocabulary (0..{self.config.vocab_size - 1})")
        self._tok[0] = token
        dec = self._dec
        counts = self.trace.counts
        if profile is None:
            embed_lookup(self._embedding, self._lut, self._tok, dec.x, counts)
            for layer in self._layers:
                self._layer(layer, dec, self.pos, gemm=False)
            self.pos += 1
            self._logits_from(dec.x)
            return self._logits
        marks = _Marks() if by_kernel else None
        t0 = time.perf_counter()
        embed_lookup(self._embedding, self._lut, self._tok, dec.x, counts)
        t1 = time.perf_counter()
        layer_seconds = []
        for layer in self._layers:
            ts = time.perf_counter()
            if marks is not None:
                marks.last = ts
            self._layer(layer, dec, self.pos, gemm=False, mark=marks.mark if marks else _no_mark)
            layer_seconds.append(time.perf_counter() - ts)
        t2 = time.perf_counter()
        self.pos += 1
        self._logits_from(dec.x)
        t3 = time.perf_counter()
        profile.update(embed=t1 - t0, forward=t2 - t1, logits=t3 - t2, layers=layer_seconds)
        if marks is not None:
            profile["kernels"] = marks.seconds
        return self._logits

    # ---------------------------------------------------------------- forward pass
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

    def _project(
        self, layer: _Layer, name: str, q: np.ndarray, s: np.ndarray, out: np.ndarray, b: _Buffers, gemm: bool
    ) -> None:
        """out = W q / s, times the tensor's optional scale (folded into the activation scale)."""
        m = layer.mats[name]
        scale = layer.scales[name]
        counts = self.trace.counts
        if layer.block_mats is not None:
            self._project_blocks(layer, name, out, b, scale)
            return
        if gemm:
            if scale != 1.0:
                np.divide(s, scale, out=b.s_adj)
                s = b.s_adj
            matmul(m, q, s, out, counts)
        else:
            sv = s[0] if scale == 1.0 else s[0] / scale
            matvec(m, q[0], sv, out[0], counts)

    def _project_blocks(self, layer: _Layer, name: str, out: np.ndarray, b: _Buffers, scale: float) -> None:
        """act_quant="block256": quantize the projection's float input per 256 values; a GEMV per token."""
        m = layer.block_mats[name]
        src = b.act_n if name == "ffn_down" else b.xn
        n = out.shape[0]
        key = (n, m.cols)
        if key not in self._block_bufs:
            self._block_bufs[key] = (
                np.zeros((n, m.cols), np.int8),
                np.zeros((n, m.cols // QK_K), np.float32),
            )
        qb, db = self._block_bufs[key]
        counts = self.trace.counts
        quantize_blocks(src[:n], qb, db, counts)
        for t in range(n):
            matvec_blocks(m, qb[t], db[t], out[t], counts)
            if scale != 1.0:
                out[t] *= np.float32(scale)

    def _layer(
        self, layer: _Layer, b: _Buffers, pos0: int, gemm: bool, mark: Callable[[str], None] = _no_mark
    ) -> None:
        counts = self.trace.counts
        cfg = self.config
        eps = self._eps
        rmsnorm(b.x, layer.norms["attn_norm"], eps, b.xn, counts)
        mark("rmsnorm")
        quantize_activations(b.xn, b.q_h, b.s_h, counts)
        mark("act_quant_i8")
        self._project(layer, "attn_q", b.q_h, b.s_h, b.q, b, gemm)
        mark("attn_q")
        self._project(layer, "attn_k", b.q_h, b.s_h, b.k, b, gemm)
        mark("attn_k")
        self._project(layer, "attn_v", b.q_h, b.s_h, b.v, b, gemm)
        mark("attn_v")
        rope_neox(b.q, cfg.n_heads, cfg.head_dim, pos0, self._cos, self._sin, counts)
        rope_neox(b.k, cfg.n_kv_heads, cfg.head_dim, pos0, self._cos, self._sin, counts)
        mark("rope_neox")
        attention_gqa(
            b.q, b.k, b.v, layer.k_cache, layer.v_cache, pos0, cfg.n_heads, self._scores, b.att, counts
        )
        mark("attention_gqa")
        rmsnorm(b.att, layer.norms["attn_sub_norm"], eps, b.xn, counts)
        mark("rmsnorm")
        quantize_activations(b.xn, b.q_h, b.s_h, counts)
        mark("act_quant_i8")
        self._project(layer, "attn_output", b.q_h, b.s_h, b.proj, b, gemm)
        mark("attn_output")
        residual_add(b.x, b.proj, counts)
        mark("residual_add")
        rmsnorm(b.x, layer.norms["ffn_norm"], eps, b.xn, counts)
        mark("rmsnorm")
        quantize_activations(b.xn, b.q_h, b.s_h, counts)
        mark("act_quant_i8")
        self._project(layer, "ffn_gate", b.q_h, b.s_h, b.gate, b, gemm)
        mark("ffn_gate")
        self._project(layer, "ffn_up", b.q_h, b.s_h, b.up, b, gemm)
        mark("ffn_up")
        self._act(b.gate, b.up, b.act, counts)
        mark("gate_act")
        rmsnorm(b.act, layer.norms["ffn_sub_norm"], eps, b.act_n, counts)
        mark("rmsnorm")
        quantize_activations(b.act_n, b.q_f, b.s_f, counts)
        mark("act_quant_i8")
        self._project(layer, "ffn_down", b.q_f, b.s_f, b.proj, b, gemm)
        mark("ffn_down")
        residual_add(b.x, b.proj, counts)
        mark("residual_add")

    def _logits_from(self, x_last: np.ndarray) -> None:
        """Final RMSNorm of one hidden state [1, hidden], then logits through the tied embedding."""
        counts = self.trace.counts
        dec = self._dec
        rmsnorm(x_last, self._output_norm, self._eps, dec.xn, counts)
        if self.logits_mode == "int8":
            quantize_activations(dec.xn, dec.q_h, dec.s_h, counts)
            q, s = dec.q_h[0], dec.s_h[0]
            self._logits_i8(self._emb_q, self._emb_s, self._emb_sum, q, s, self._u8, self._logits, counts)
        else:
            fp32_logits(self._embedding, self._lut, dec.xn[0], self._logits, counts)


# -------------------------------------------------------------------- loading
def load_model(
    path: str | os.PathLike[str],
    *,
    kernel: str = "auto",
    threads: int | None = None,
    strict: bool | None = None,
    logits: str = "int8",
    act_quant: str = "token",
) -> Model:
    """Load, validate and prepare a GGUF model: matrices in the chosen kernel layouts, buffers allocated."""
    start = time.perf_counter()
    check_choice("kernel", kernel, KERNEL_MODES)
    check_choice("logits mode", logits, LOGITS_MODES)
    check_choice("activation quantization", act_quant, ACT_QUANT_MODES)
    set_threads(threads)
    mf = load_file(path, strict=strict)
    cfg = mf.config
    tokenizer = Tokenizer.from_metadata(mf.gguf.metadata)
    selection = _select_kernels(mf, kernel)
    kv_cache = _kv_cache(cfg)
    layers = [_load_layer(mf, i, selection, kv_cache) for i in range(cfg.n_layers)]
    embedding = _embedding_view(mf)
    output_norm = _norm(mf, "output_norm.weight", cfg.hidden)
    if act_quant == "block256":
        for i, layer in enumerate(layers):
            layer.block_mats = {name: _block_matrix(mf, f"blk.{i}.{name}.weight") for name in LAYER_MATRICES}
    model = Model(mf, tokenizer, layers, embedding, output_norm, logits, selection)
    model.act_quant = act_quant
    model.load_seconds = time.perf_counter() - start
    return model


def _block_matrix(mf: ModelFile, name: str) -> BlockMatrix:
    tensor = mf.tensor(name)
    rows, cols = tensor.shape
    return block_matrix(mf.flavor(name), tensor.data, rows, cols)


def set_threads(threads: int | None) -> None:
    """Apply a thread count to numba's parallel kernels (None keeps numba's default)."""
    if threads is None:
        return
    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= threads <= limit:
        raise EngineError(f"--threads must be between 1 and {limit} (got {threads})")
    numba.set_num_threads(threads)


def _select_kernels(mf: ModelFile, kernel: str) -> kernel_choice.Selection:
    cfg = mf.config
    samples = {}
    for name in LAYER_MATRICES:
        for i in range(cfg.n_layers):
            tname = f"blk.{i}.{name}.weight"
            t = mf.tensor(tname)
            key = (mf.flavor(tname), *t.shape)
            samples.setdefault(key, t.data)
    if kernel == "auto":
        return kernel_choice.choose(samples)
    return kernel_choice.fixed(samples, kernel)


def _load_layer(mf: ModelFile, i: int, selection: kernel_choice.Selection, kv_cache: np.ndarray) -> _Layer:
    cfg = mf.config
    norm_sizes = {
        "attn_norm": cfg.hidden,
        "attn_sub_norm": cfg.hidden,
        "ffn_norm": cfg.hidden,
        "ffn_sub_norm": cfg.ffn,
    }
    norms = {n: _norm(mf, f"blk.{i}.{n}.weight", norm_sizes[n]) for n in LAYER_NORMS}
    mats, scales = {}, {}
    for name in LAYER_MATRICES:
        tname = f"blk.{i}.{name}.weight"
        t = mf.tensor(tname)
        flavor = mf.flavor(tname)
        rows, cols = t.shape
        mats[name] = prepare_matrix(flavor, t.data, rows, cols, selection.kernel_for(flavor, rows, cols))
        scales[name] = _scale(mf, f"blk.{i}.{name}.scale")
    return _Layer(norms, mats, scales, kv_cache[i, 0], kv_cache[i, 1])


def _kv_cache(cfg: ModelConfig) -> np.ndarray:
    """[layers, K/V, context, n_kv, head_dim] of lazily mapped zero pages: memory grows with positions used.

    Positions are the outer axis so a token's keys are contiguous, and the region opts out of transparent huge
    pages, which numpy requests for large arrays: one touched key would otherwise map 2 MB.
    """
    cache = np.zeros((cfg.n_layers, 2, cfg.context_length, cfg.n_kv_heads, cfg.head_dim), np.float32)
    advise(cache, "MADV_NOHUGEPAGE")
    return cache


def _norm(mf: ModelFile, name: str, size: int) -> np.ndarray:
    values = np.ascontiguousarray(mf.float_array(name), dtype=np.float32).reshape(-1)
    if values.size != size:
        raise UnsupportedModelError(f"{name}: {values.size} values, expected {size}")
    return values


def _scale(mf: ModelFile, name: str) -> float:
    """The optional scalar `.scale` multiplying a matrix's output (bitnet arch); 1.0 when absent."""
    if name not in mf.gguf.tensors:
        return 1.0
    values = np.asarray(mf.float_array(name), dtype=np.float64).reshape(-1)
    if values.size != 1 or not math.isfinite(values[0]) or values[0] == 0:
        raise UnsupportedModelError(
            f"{name}: expected one finite non-zero scale ({values.size} value(s) found)"
        )
    return float(values[0])


def _embedding_view(mf: ModelFile) -> np.ndarray:
    """token_embd as stored: F16/BF16 bits (uint16) or F32, [vocab, hidden], still memory-mapped."""
    cfg = mf.config
    t = mf.tensor("token_embd.weight")
    if tuple(t.shape) != (cfg.vocab_size, cfg.hidden):
        raise UnsupportedModelError(
            f"token_embd.weight has shape {tuple(t.shape)}, expected ({cfg.vocab_size}, {cfg.hidden})"
        )
    n = cfg.vocab_size * cfg.hidden
    if t.ggml_type in (GGMLType.F16, GGMLType.BF16):
        return t.data[: 2 * n].view(np.uint16).reshape(cfg.vocab_size, cfg.hidden)
    if t.ggml_type == GGMLType.F32:
        return t.data[: 4 * n].view(np.float32).reshape(cfg.vocab_size, cfg.hidden)
    raise UnsupportedModelError(f"token_embd.weight: type {t.ggml_type} is not supported (F16, BF16 or F32)")


def _int8_embedding(embedding: np.ndarray, lut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row int8 copy of the embedding (values, scales, int32 row sums), built in chunks; the mapped
    source pages are released as we go."""
    vocab, hidden = embedding.shape
    emb_q = np.empty((vocab, hidden), np.int8)
    emb_s = np.empty(vocab, np.float32)
    emb_sum = np.empty(vocab, np.int32)
    step = max(1, _EMBED_CHUNK_BYTES // (hidden * embedding.itemsize))
    for r0 in range(0, vocab, step):
        r1 = min(vocab, r0 + step)
        quantize_embedding_rows(embedding[r0:r1], lut, emb_q[r0:r1], emb_s[r0:r1], emb_sum[r0:r1])
        release_mapped_pages(embedding[r0:r1])
    return emb_q, emb_s, emb_sum


def _rope_tables(context: int, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    freqs = float(theta) ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(context, dtype=np.float64)[:, None] * freqs[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
