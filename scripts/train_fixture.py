"""Train the `trained` preset: a small BitNet b1.58 on Python's documentation, quantization-aware.

Why: parity between implementations is only meaningful on a well-conditioned model with peaked logits; random
weights are chaotic (a few ulp of float noise flip greedy tokens). This trains the shape of
`engine.presets.PRESETS["trained"]` on `pydoc_data.topics` (the standard library's 465 kB of English
reference text, present in every Python install), tokenized with the project's byte-level BPE
(`engine.tokenizer_data`), and writes the result as I2_S GGUF files into engine/data/: one `bitnet-b1.58`
model (squared-ReLU FFN) and its SiLU twin of the `bitnet` architecture (trained the same way, for llama.cpp).

Training follows transformers' `AutoBitLinear` in online mode: every matrix is used as its absmean ternary
quantization (per-tensor scale mean|W|, values round(W / scale) clipped to {-1, 0, 1}) and its input as
per-token absmax int8 (scale 127 / max|x|), both with a straight-through estimator, over float master weights.
Exported, each matrix is exactly the ternary values and scale its last forward pass used.

Deterministic: fixed seeds, `torch.use_deterministic_algorithms(True)` and a fixed thread count; a rerun
with the same torch build on the same kind of CPU writes byte-identical files (float summation order in
torch's kernels may differ across CPUs and builds). Needs the `reference` extra (torch). Usage:
    TORCHDYNAMO_DISABLE=1 python scripts/train_fixture.py [--steps N] [--out-dir engine/data]
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # nothing here is compiled; skip dynamo's start-up cost
# Idle OpenMP threads sleep instead of spinning: the same numbers, and on a busy machine 2 threads ran a step
# in a third of the time spinning threads took.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from engine.constants import ARCH_BITNET, ARCH_BITNET_B158, LAYER_MATRICES, layer_norm_sizes  # noqa: E402
from engine.model_io import Floats, Ternary  # noqa: E402
from engine.presets import Preset, get_preset  # noqa: E402
from engine.tokenizer import Tokenizer  # noqa: E402
from engine.tokenizer_data import tokenizer_metadata  # noqa: E402
from engine.trained import (  # noqa: E402
    TRAIN_FRACTION,
    TRAINED_PRESET,
    source_path,
    training_corpus,
    write_source,
)

INIT_STD = 0.02
PROJECT_ROOT = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------- quantization (straight-through)
class NormQuant(torch.autograd.Function):
    """RMSNorm, then per-token absmax int8 (scale 127 / max|x|), as the engine and bitnet.cpp quantize every
    matrix input. Backward: identity through the rounding, the exact RMSNorm gradient; one fused op keeps
    two tensors for backward where the composed ops would keep six."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        xhat = x * rstd
        y = xhat * w
        s = 127.0 / y.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        ctx.save_for_backward(xhat, rstd, w)
        return y.mul_(s).round_().clamp_(-128, 127).div_(s)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        xhat, rstd, w = ctx.saved_tensors
        gw = grad * w
        dx = rstd * (gw - xhat * (gw * xhat).mean(-1, keepdim=True))
        dw = (grad * xhat).reshape(-1, w.shape[0]).sum(0)
        return dx, dw, None


def ternary(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absmean ternary quantization: (values in {-1, 0, 1}, per-tensor scale mean|W|)."""
    scale = w.abs().mean().clamp(min=1e-5)
    return (w / scale).round().clamp(-1, 1), scale


class WeightQuant(torch.autograd.Function):
    """The ternary weight a forward pass uses (values x scale); identity gradient to the float master."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor) -> torch.Tensor:
        values, scale = ternary(w)
        return values * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


def rmsnorm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


# -------------------------------------------------------------------- the model (the engine's layer order)
class Layer(nn.Module):
    """One block: attention with a sub-norm before its output matrix, a gated FFN with one before down."""

    def __init__(self, p: Preset, act: str) -> None:
        super().__init__()
        self.p, self.act = p, act
        shapes = p.matrix_shapes()
        mats = {n: nn.Parameter(torch.randn(*shapes[n]) * INIT_STD) for n in LAYER_MATRICES}
        self.mats = nn.ParameterDict(mats)
        sizes = layer_norm_sizes(p.hidden, p.ffn)
        self.norms = nn.ParameterDict({n: nn.Parameter(torch.ones(size)) for n, size in sizes.items()})

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        p, g = self.p, self.norms
        b, t, _ = x.shape
        h = NormQuant.apply(x, g["attn_norm"], p.rms_eps)
        qkv = h @ self.weight("attn_q", "attn_k", "attn_v").t()
        q, k, v = qkv.split([p.hidden, p.kv_dim, p.kv_dim], -1)
        q = q.view(b, t, p.n_heads, p.head_dim).transpose(1, 2)
        k = k.view(b, t, p.n_kv_heads, p.head_dim).transpose(1, 2)
        v = v.view(b, t, p.n_kv_heads, p.head_dim).transpose(1, 2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        a = a.transpose(1, 2).reshape(b, t, p.hidden)
        x = x + NormQuant.apply(a, g["attn_sub_norm"], p.rms_eps) @ self.weight("attn_output").t()
        h = NormQuant.apply(x, g["ffn_norm"], p.rms_eps)
        gate, up = (h @ self.weight("ffn_gate", "ffn_up").t()).chunk(2, -1)
        m = (F.relu(gate).square() if self.act == "relu2" else F.silu(gate)) * up
        return x + NormQuant.apply(m, g["ffn_sub_norm"], p.rms_eps) @ self.weight("ffn_down").t()

    def weight(self, *names: str) -> torch.Tensor:
        """The quantized matrices, stacked by rows (one matmul for Q, K and V, one for gate and up)."""
        return torch.cat([WeightQuant.apply(self.mats[n]) for n in names])


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX (split-half) rotary embedding: pairs (i, i + head_dim/2), as the GGUF architectures use."""
    a, b = x.chunk(2, -1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)


class BitNet(nn.Module):
    """Embedding (tied with the logits), the layers, the output norm."""

    def __init__(self, p: Preset, act: str) -> None:
        super().__init__()
        self.p, self.act = p, act
        self.embedding = nn.Parameter(torch.randn(p.vocab_size, p.hidden) * INIT_STD)
        self.layers = nn.ModuleList(Layer(p, act) for _ in range(p.n_layers))
        self.output_norm = nn.Parameter(torch.ones(p.hidden))
        inv = p.rope_theta ** (-torch.arange(0, p.head_dim // 2, dtype=torch.float64) * 2 / p.head_dim)
        angles = torch.arange(p.context_length, dtype=torch.float64)[:, None] * inv[None]
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        t = ids.shape[1]
        x = self.embedding[ids]
        for layer in self.layers:
            x = layer(x, self.cos[:t], self.sin[:t])
        return rmsnorm(x, self.output_norm, self.p.rms_eps) @ self.embedding.t()

    def export(self) -> dict[str, Ternary | Floats]:
        """GGUF tensor name -> weight: each matrix as the ternary values and scale its forward pass uses."""
        out: dict[str, Ternary | Floats] = {"token_embd.weight": floats(self.embedding)}
        for i, layer in enumerate(self.layers):
            for name, w in layer.mats.items():
                values, scale = ternary(w.detach())
                out[f"blk.{i}.{name}.weight"] = Ternary.of(values.to(torch.int8).numpy(), float(scale))
            for name, g in layer.norms.items():
                out[f"blk.{i}.{name}.weight"] = floats(g)
        out["output_norm.weight"] = floats(self.output_norm)
        return out


def floats(p: torch.Tensor) -> Floats:
    return Floats.of(p.detach().numpy().copy())


# -------------------------------------------------------------------- data and training
def windows(stream: np.ndarray, starts: np.ndarray, t: int, bos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [BOS, s0..s(t-2)] and targets [s0..s(t-1)] per start: position 0 is BOS, as at inference."""
    seqs = np.stack([stream[s : s + t] for s in starts]).astype(np.int64)
    inputs = np.concatenate([np.full((len(starts), 1), bos, np.int64), seqs[:, :-1]], axis=1)
    return torch.from_numpy(inputs), torch.from_numpy(seqs)


def learning_rate(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass(frozen=True)
class Schedule:
    """One training run: its steps, peak learning rate, warm-up steps and data seed."""

    steps: int
    lr: float
    warmup: int
    seed: int


def train(
    model: BitNet, run: Schedule, stream: np.ndarray, held: np.ndarray, bos: int, batch: int, log_every: int
) -> dict[str, Any]:
    """Train `model` in place with AdamW; the last training loss, the held-out loss and the seconds."""
    p = model.p
    matrices = [w for layer in model.layers for w in layer.mats.values()]
    norms = [g for layer in model.layers for g in layer.norms.values()]
    others = [model.embedding, model.output_norm, *norms]
    opt = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": 0.05}, {"params": others, "weight_decay": 0.0}],
        lr=run.lr,
        betas=(0.9, 0.95),
    )
    rng = np.random.default_rng(run.seed)
    t = p.context_length
    val_inputs, val_targets = windows(held, np.arange(0, len(held) - t, t)[:8], t, bos)
    start, cpu_start = time.perf_counter(), time.process_time()
    loss_value = float("nan")
    for step in range(run.steps):
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, run.steps, run.lr, run.warmup)
        inputs, targets = windows(stream, rng.integers(0, len(stream) - t, batch), t, bos)
        loss = F.cross_entropy(model(inputs).reshape(-1, p.vocab_size), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_value = loss.item()
        if step % log_every == 0 or step == run.steps - 1:
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            where = f"[{model.act}] step {step + 1}/{run.steps}"
            print(f"{where} loss {loss_value:.4f} ({wall:.0f} s, cpu {cpu:.0f} s)", flush=True)
    with torch.no_grad():
        val = float(F.cross_entropy(model(val_inputs).reshape(-1, p.vocab_size), val_targets.reshape(-1)))
    return {"train_loss": loss_value, "held_out_loss": val, "seconds": time.perf_counter() - start}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/train_fixture.py", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps of the squared-ReLU model")
    parser.add_argument("--twin-steps", type=int, default=250, help="fine-tuning steps of its SiLU twin")
    parser.add_argument("--batch", type=int, default=8, help="sequences of the preset's context length")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--twin-lr", type=float, default=1.5e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "engine" / "data")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    p = get_preset(TRAINED_PRESET)
    text = training_corpus()
    tok = Tokenizer.from_metadata(tokenizer_metadata(p.vocab_size))
    stream = np.asarray(tok.encode(text, add_bos=False), np.int32)
    cut = int(len(stream) * TRAIN_FRACTION)
    train_part, held = stream[:cut], stream[cut:]
    per_token = len(text.encode()) / len(stream)
    print(f"corpus: {len(text)} characters, {len(stream)} tokens ({per_token:.2f} bytes each)")
    provenance: dict[str, object] = {
        "corpus": "pydoc_data.topics",
        "corpus_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "corpus_tokens": int(len(stream)),
        "held_out_tokens": int(len(held)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "batch": args.batch,
        "sequence": p.context_length,
        "seed": args.seed,
        "threads": args.threads,
    }
    torch.manual_seed(args.seed)
    model = BitNet(p, "relu2")
    runs = [
        (ARCH_BITNET_B158, model, Schedule(args.steps, args.lr, args.warmup, args.seed)),
        # The SiLU twin starts from the squared-ReLU weights: the same corpus knowledge, its own FFN.
        (
            ARCH_BITNET,
            BitNet(p, "silu"),
            Schedule(args.twin_steps, args.twin_lr, args.warmup // 2, args.seed + 1),
        ),
    ]
    for arch, net, run in runs:
        if net is not model:
            net.load_state_dict(model.state_dict())
        result = train(net, run, train_part, held, tok.bos_id, args.batch, args.log_every)
        training = {
            **provenance,
            "steps": run.steps,
            "lr": run.lr,
            "train_loss": result["train_loss"],
            "held_out_loss": result["held_out_loss"],
        }
        if net is not model:
            training["initialized_from"] = ARCH_BITNET_B158
        out = write_source(args.out_dir / source_path(arch).name, arch, net.export(), training)
        print(
            f"[{arch}] train loss {result['train_loss']:.4f}, held-out loss {result['held_out_loss']:.4f}, "
            f"{result['seconds']:.0f} s; wrote {out} ({out.stat().st_size} bytes)",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
