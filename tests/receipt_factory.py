"""Builds valid, internally consistent receipts for tests, independently of harness/receipts/expectations.py.

The kernel counters come from replaying the engine's call pattern forward by forward (the layer order in
FORMATS.md), so the verifier's expectation table is checked against a second, separate encoding of it.
"""

import copy
import statistics
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from harness.receipts.digest import finalize, token_digest
from harness.receipts.files import utc_timestamp
from harness.receipts.summary import decode_tokens_per_second, percentiles

MODEL = {
    "path": "models/tiny.gguf",
    "sha256": "ab" * 32,
    "size_bytes": 123456,
    "architecture": "bitnet-b1.58",
    "preset": "tiny",
    "preset_seed": 7,
    "format": "i2s",
    "n_layers": 2,
    "hidden": 64,
    "ffn": 160,
    "n_heads": 4,
    "n_kv_heads": 2,
    "head_dim": 16,
    "vocab_size": 300,
    "tensors_per_format": {"i2s": 14, "f32": 9, "f16": 1},
}
PROMPT_IDS = [1, 20, 30, 40, 50]
OUTPUT_IDS = [11, 12, 13, 14]
REPETITIONS = 3


def _matrices(model: dict[str, Any]) -> list[tuple[int, int]]:
    """(rows, cols) of the 7 ternary matrices of a layer, in forward order."""
    h, f = model["hidden"], model["ffn"]
    q, kv = model["n_heads"] * model["head_dim"], model["n_kv_heads"] * model["head_dim"]
    return [(q, h), (kv, h), (kv, h), (h, q), (f, h), (f, h), (h, f)]


def simulate_counts(model: dict[str, Any], prompt_tokens: int, decode_steps: list[int]) -> dict[str, dict]:
    """Counters of `len(decode_steps)` generations: one prefill (GEMM) then the given decode steps (GEMV)."""
    counts: dict[str, dict[str, int]] = {}

    def call(kid: str, rows: int, elements: int) -> None:
        row = counts.setdefault(kid, {"calls": 0, "rows": 0, "elements": 0})
        row["calls"] += 1
        row["rows"] += rows
        row["elements"] += elements

    def forward(tokens: int, matmul: str) -> None:
        h = model["hidden"]
        mats = iter(_matrices(model) * model["n_layers"])

        def mm() -> None:
            rows, cols = next(mats)
            call(matmul, rows * tokens, rows * cols * tokens)

        call("embed_lookup", tokens, tokens * h)
        for _ in range(model["n_layers"]):
            call("rmsnorm", tokens, tokens * h)
            call("act_quant_i8", tokens, tokens * h)
            mm(), mm(), mm()
            call("rope_neox", tokens, tokens * h)
            call("rope_neox", tokens, tokens * h // 2)
            call("attention_gqa", tokens, tokens * h)
            call("rmsnorm", tokens, tokens * h)
            call("act_quant_i8", tokens, tokens * h)
            mm()
            call("residual_add", tokens, tokens * h)
            call("rmsnorm", tokens, tokens * h)
            call("act_quant_i8", tokens, tokens * h)
            mm(), mm()
            call("relu2_gate", tokens, tokens * model["ffn"])
            call("rmsnorm", tokens, tokens * model["ffn"])
            call("act_quant_i8", tokens, tokens * model["ffn"])
            mm()
            call("residual_add", tokens, tokens * h)
        call("rmsnorm", 1, h)
        call("act_quant_i8", 1, h)
        call("logits_i8", model["vocab_size"], model["vocab_size"] * h)

    for steps in decode_steps:
        forward(prompt_tokens, "i2s_gemm")
        for _ in range(steps):
            forward(1, "i2s_gemv")
    return counts


def _probe_tensors(model: dict[str, Any]) -> list[dict[str, Any]]:
    """Every tensor of the file, as the probe lists them."""
    h = model["hidden"]
    out = [
        {
            "name": "token_embd.weight",
            "format": "F16",
            "flavor": "f16",
            "shape": [300, h],
            "bytes": 300 * h * 2,
        },
        {"name": "output_norm.weight", "format": "F32", "flavor": "f32", "shape": [h], "bytes": h * 4},
    ]
    names = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    norms = {"attn_norm": h, "attn_sub_norm": h, "ffn_norm": h, "ffn_sub_norm": model["ffn"]}
    for layer in range(model["n_layers"]):
        for name, (rows, cols) in zip(names, _matrices(model), strict=True):
            out.append(
                {
                    "name": f"blk.{layer}.{name}.weight",
                    "format": "I2_S",
                    "flavor": "i2s",
                    "shape": [rows, cols],
                    "bytes": rows * cols // 4 + 32,
                    "kernel": "i2s_gemv",
                }
            )
        for name, size in norms.items():
            out.append(
                {
                    "name": f"blk.{layer}.{name}.weight",
                    "format": "F32",
                    "flavor": "f32",
                    "shape": [size],
                    "bytes": size * 4,
                }
            )
    for row in out:
        row.setdefault("kernel", None)
    return out


def _candidate(
    shape: list[int], kernel: str, seconds: list[float], bytes_per_weight: float
) -> dict[str, Any]:
    rows, cols = shape
    median = statistics.median(seconds)
    return {
        "shape": shape,
        "kernel": kernel,
        "max_abs_error": 0.0,
        "gbps": rows * cols * bytes_per_weight / median / 1e9,
        "gmacs": rows * cols / median / 1e9,
        "seconds": seconds,
    }


def raw_receipt() -> dict[str, Any]:
    """A complete receipt without its content digest."""
    now = datetime.now(timezone.utc)
    out_digest = token_digest(OUTPUT_IDS)
    reps = [
        {
            "prefill_seconds": 0.010 + 0.001 * i,
            "ttft_seconds": 0.011 + 0.001 * i,
            "decode_seconds": [0.004 + 0.0001 * i, 0.005 + 0.0005 * i, 0.006 + 0.0002 * i],
            "tokens_generated": len(OUTPUT_IDS),
            "output_sha256": out_digest,
        }
        for i in range(REPETITIONS)
    ]
    tps = decode_tokens_per_second(reps)
    steps = [
        {"embed": 1e-5, "forward": 0.004, "logits": 0.0005, "sample": 1e-5, "layers": [0.0019, 0.0019]},
        {"embed": 2e-5, "forward": 0.005, "logits": 0.0006, "sample": 2e-5, "layers": [0.0024, 0.0024]},
    ]
    stage = {k: percentiles([s[k] for s in steps]) for k in ("embed", "forward", "logits", "sample")}
    stage["total"] = percentiles([s["embed"] + s["forward"] + s["logits"] + s["sample"] for s in steps])
    counts = simulate_counts(MODEL, len(PROMPT_IDS), [len(r["decode_seconds"]) for r in reps])
    weight_bytes = 40_000
    floor = 10.0 * 1e9 / weight_bytes
    return {
        "schema_version": "1.0.0",
        "started_at": utc_timestamp(now - timedelta(seconds=10)),
        "timestamp": utc_timestamp(now - timedelta(seconds=1)),
        "compute_path": "real",
        "backend": "cpu",
        "deterministic": True,
        "tokens_requested": 4,
        "tokens_generated": len(OUTPUT_IDS),
        "tokens_per_second": tps,
        "kernels": sorted(counts),
        "kernel_counts": counts,
        "environment": {"strict_loader": False, "variables": {"NUMBA_NUM_THREADS": "2"}},
        "model": copy.deepcopy(MODEL),
        "phases": {
            "probe": {
                "tensors": _probe_tensors(MODEL),
                "candidates": [
                    _candidate([64, 64], "i2s_gemv", [1e-6, 1.1e-6, 1.2e-6], 0.25),
                    _candidate([64, 64], "tl1_gemv", [1.3e-6, 1.4e-6], 0.25),
                ],
            },
            "timing": {"steps": steps, "percentiles": stage},
            "benchmark": {
                "warmup_repetitions": 1,
                "repetitions": reps,
                "summary": {
                    "prefill_seconds": percentiles([r["prefill_seconds"] for r in reps]),
                    "ttft_seconds": percentiles([r["ttft_seconds"] for r in reps]),
                    "decode_latency_seconds": percentiles([s for r in reps for s in r["decode_seconds"]]),
                    "tokens_per_second": tps,
                },
            },
        },
        "prompt": {
            "text": "hello",
            "token_count": len(PROMPT_IDS),
            "token_ids_sha256": token_digest(PROMPT_IDS),
        },
        "sampling": {"temperature": 0.0, "top_k": 0, "top_p": 1.0},
        "seed": 0,
        "threads": 2,
        "kernel_choice": {
            "requested": "auto",
            "per_shape": [{"shape": list(shape), "kernel": "i2s"} for shape in sorted(set(_matrices(MODEL)))],
            "variants": {"i2s_gemm": "avx512vnni", "i2s_gemv": "avx512vnni", "logits_i8": "portable"},
        },
        "output_digest": {"sha256": out_digest, "count": len(OUTPUT_IDS)},
        "harness": {
            "version": "0.1.0",
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "git_dirty": False,
        },
        "host": {
            "cpu_model": "Test CPU",
            "cpu_flags": ["avx2", "avx512_vnni", "avx512bw", "avx512f", "avx512vl", "fma"],
            "cores": 2,
            "memory_bytes": 8 << 30,
            "os": "Linux",
            "python": "3.11.7",
            "numba": "0.68.1",
            "llvmlite": "0.50.0",
            "numpy": "2.0.0",
            "threading_layer": "omp",
        },
        "bandwidth": {
            "read_gbps": 10.0,
            "weight_bytes_per_token": weight_bytes,
            "decode_floor_tok_s": floor,
            "ratio_to_floor": tps / floor,
        },
        "jit_seconds": 1.5,
        "load_seconds": 0.05,
        "peak_rss_bytes": 100 << 20,
    }


def make_receipt() -> dict[str, Any]:
    """A valid, finalized receipt that passes every gate."""
    return finalize(raw_receipt())


def mutated(edit: Callable[[dict[str, Any]], object], *, refinalize: bool = True) -> dict[str, Any]:
    """A valid receipt changed by `edit` (in place), re-digested unless `refinalize` is False."""
    receipt = make_receipt()
    edit(receipt)
    return finalize(receipt) if refinalize else receipt


def make_phase_receipt(phase: str) -> dict[str, Any]:
    """A valid phase receipt of `probe` or `timing` run on its own: only that phase, no benchmark fields, and
    the counters of that phase's own work (the probe: each candidate once for its error, then once per timed
    sample, one activation quantization per shape; timing: one prefill and one forward per step)."""
    r = raw_receipt()
    section = r["phases"][phase]
    for field in ("deterministic", "tokens_requested", "tokens_generated", "tokens_per_second"):
        del r[field]
    for field in ("output_digest", "bandwidth"):
        del r[field]
    r["phases"] = {phase: section}
    if phase == "timing":
        counts = simulate_counts(MODEL, len(PROMPT_IDS), [len(section["steps"])])
        r["kernel_choice"]["variants"] = {
            "i2s_gemm": "portable",
            "i2s_gemv": "portable",
            "logits_i8": "portable",
        }
    else:
        del r["prompt"], r["sampling"], r["seed"]
        counts = {"act_quant_i8": {"calls": 1, "rows": 1, "elements": 64}}
        for cand in section["candidates"]:
            rows, cols = cand["shape"]
            calls = 1 + len(cand["seconds"])
            counts[cand["kernel"]] = {"calls": calls, "rows": calls * rows, "elements": calls * rows * cols}
            cand["variant"] = "portable"
        r["kernel_choice"]["variants"] = {c["kernel"]: "portable" for c in section["candidates"]}
    r["kernel_counts"] = counts
    r["kernels"] = sorted(counts)
    return finalize(r)
