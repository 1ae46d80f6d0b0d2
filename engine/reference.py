"""An independent float64 numpy forward pass of the same model, for checking the numba engine.

It shares only the file reader and the format modules (`engine.formats` dequantize) with the engine: no numba,
no kernels, no KV cache. It applies the same per-token int8 activation quantization before every matrix and,
by default, the same per-row int8 copy of the tied embedding for logits, so the two paths compute the same
function and differ only by float rounding. Meant for small models: every matrix is held in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.constants import LAYER_MATRICES, LAYER_NORMS
from engine.errors import EngineError
from engine.formats import FORMATS
from engine.loader import ModelFile

MAX_REFERENCE_BYTES = 2 << 30


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row absmax int8: s = 127 / max|x| (1 when the row is zero), q = clip(rint(x * s), -128, 127)."""
    amax = np.abs(x).max(axis=-1)
    s = np.where(amax > 0, 127.0 / np.where(amax > 0, amax, 1.0), 1.0)
    q = np.clip(np.rint(x * s[..., None]), -128, 127)
    return q, s


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps) * w


def rope_neox(x: np.ndarray, n_heads: int, head_dim: int, theta: float) -> np.ndarray:
    """Rotate pairs (i, i + head_dim/2) of every head by position * theta^(-2i/head_dim); positions 0..T-1."""
    n_tok = x.shape[0]
    half = head_dim // 2
    ang = np.arange(n_tok)[:, None] * theta ** (-np.arange(half) * 2.0 / head_dim)[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    h = x.reshape(n_tok, n_heads, head_dim)
    a, b = h[..., :half], h[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(n_tok, -1)


def causal_gqa(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_heads: int, n_kv: int) -> np.ndarray:
    n_tok = q.shape[0]
    hd = q.shape[1] // n_heads
    qh = q.reshape(n_tok, n_heads, hd).transpose(1, 0, 2)
    kh = np.repeat(k.reshape(n_tok, n_kv, hd).transpose(1, 0, 2), n_heads // n_kv, axis=0)
    vh = np.repeat(v.reshape(n_tok, n_kv, hd).transpose(1, 0, 2), n_heads // n_kv, axis=0)
    scores = qh @ kh.transpose(0, 2, 1) / np.sqrt(hd)
    scores = np.where(np.tril(np.ones((n_tok, n_tok), bool))[None], scores, -np.inf)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return (p @ vh).transpose(1, 0, 2).reshape(n_tok, -1)


class ReferenceModel:
    """Float64 logits for every position of a token sequence, recomputed from scratch each call."""

    def __init__(self, model_file: ModelFile, logits: str = "int8") -> None:
        if logits not in ("int8", "f32"):
            raise EngineError(f"unknown logits mode {logits!r}; choose int8 or f32")
        cfg = self.config = model_file.config
        n_matrix = sum(int(np.prod(model_file.tensor(f"blk.0.{n}.weight").shape)) for n in LAYER_MATRICES)
        needed = 8 * (cfg.n_layers * n_matrix + 2 * cfg.vocab_size * cfg.hidden)
        if needed > MAX_REFERENCE_BYTES:
            raise EngineError(f"the float64 reference needs {needed >> 20} MiB; use it on small models only")
        self.logits_mode = logits
        self.layers = []
        for i in range(cfg.n_layers):
            layer: dict[str, object] = {}
            for n in LAYER_NORMS:
                layer[n] = model_file.float_array(f"blk.{i}.{n}.weight").astype(np.float64).reshape(-1)
            for n in LAYER_MATRICES:
                name = f"blk.{i}.{n}.weight"
                t = model_file.tensor(name)
                rows, cols = t.shape
                w = FORMATS[model_file.flavor(name)].dequantize(t.data, rows, cols).astype(np.float64)
                scale_name = f"blk.{i}.{n}.scale"
                if scale_name in model_file.gguf.tensors:
                    w = w * float(model_file.float_array(scale_name).reshape(-1)[0])
                layer[n] = w
            self.layers.append(layer)
        self.output_norm = model_file.float_array("output_norm.weight").astype(np.float64).reshape(-1)
        self.embedding = model_file.float_array("token_embd.weight").astype(np.float64)
        amax = np.abs(self.embedding).max(axis=1)
        safe = np.where(amax > 0, amax, 1.0)
        self.emb_q = np.clip(np.rint(self.embedding * (127.0 / safe)[:, None]), -127, 127)
        self.emb_s = np.where(amax > 0, amax / 127.0, 1.0)

    def _matmul(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        """W applied to per-token int8-quantized activations: (q @ W.T) / s."""
        q, s = quantize_rows(x)
        return (q @ w.T) / s[:, None]

    def logits_for(self, tokens: Sequence[int]) -> np.ndarray:
        """float64 [T, vocab]: logits after every prefix of `tokens` (position t sees tokens 0..t)."""
        cfg = self.config
        ids = np.asarray(tokens, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0 or ids.min() < 0 or ids.max() >= cfg.vocab_size:
            raise EngineError(f"tokens must be a non-empty list of ids in 0..{cfg.vocab_size - 1}")
        eps = cfg.rms_eps
        x = self.embedding[ids].copy()
        for layer in self.layers:
            xn = rmsnorm(x, layer["attn_norm"], eps)
            q = rope_neox(self._matmul(xn, layer["attn_q"]), cfg.n_heads, cfg.head_dim, cfg.rope_theta)
            k = rope_neox(self._matmul(xn, layer["attn_k"]), cfg.n_kv_heads, cfg.head_dim, cfg.rope_theta)
            v = self._matmul(xn, layer["attn_v"])
            att = rmsnorm(causal_gqa(q, k, v, cfg.n_heads, cfg.n_kv_heads), layer["attn_sub_norm"], eps)
            x = x + self._matmul(att, layer["attn_output"])
            xn = rmsnorm(x, layer["ffn_norm"], eps)
            gate = self._matmul(xn, layer["ffn_gate"])
            up = self._matmul(xn, layer["ffn_up"])
            if cfg.ffn_act == "relu2":
                act = np.maximum(gate, 0.0) ** 2 * up
            else:
                act = gate / (1.0 + np.exp(-gate)) * up
            x = x + self._matmul(rmsnorm(act, layer["ffn_sub_norm"], eps), layer["ffn_down"])
        xn = rmsnorm(x, self.output_norm, eps)
        if self.logits_mode == "f32":
            return xn @ self.embedding.T
        q, s = quantize_rows(xn)
        return (q @ self.emb_q.T) * self.emb_s[None, :] / s[:, None]

    def greedy(self, prompt: Sequence[int], steps: int) -> list[int]:
        """`steps` greedy tokens after `prompt` (recomputing the whole sequence each step)."""
        seq = list(prompt)
        out = []
        for _ in range(steps):
            tok = int(np.argmax(self.logits_for(seq)[-1]))
            out.append(tok)
            seq.append(tok)
        return out
