"""Speed of the attention kernel (ops.attention_gqa) alone at the 2B-4T shapes: 20 heads, 5 KV heads of 128.

One call per layer over 30 layers' own caches, as a decode step (or a prefill block of --tokens queries)
makes them. "warm" is the sweep of the 30 layers back to back (their caches, 0.9 MB each at position 176,
stay in L3); "after reads" reads 64 MB of other memory before every tenth layer, as the weights between two
attention calls would. Run from a checkout (PYTHONPATH selects which one, so two trees compare A/B):

    python benchmarks/attention_speed.py --threads 2 --position 176 --rounds 15 --json
"""

import argparse
import json
import statistics
import time

import numba
import numpy as np

from engine.kernels import bench, ops
from engine.trace import Trace

HEADS, KV_HEADS, HEAD_DIM, LAYERS = 20, 5, 128, 30


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--position", type=int, default=176, help="positions already in the cache")
    ap.add_argument("--tokens", type=int, default=1, help="query tokens per call (1 = decode)")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    context = args.position + args.tokens
    rng = np.random.default_rng(0)
    caches = [
        (
            (rng.standard_normal((KV_HEADS, context, HEAD_DIM)) * 0.5).astype(np.float32),
            rng.standard_normal((KV_HEADS, context, HEAD_DIM)).astype(np.float32),
        )
        for _ in range(LAYERS)
    ]
    q = rng.standard_normal((args.tokens, HEADS * HEAD_DIM)).astype(np.float32)
    k = rng.standard_normal((args.tokens, KV_HEADS * HEAD_DIM)).astype(np.float32)
    v = rng.standard_normal((args.tokens, KV_HEADS * HEAD_DIM)).astype(np.float32)
    scores = np.zeros((HEADS, context), np.float32)
    out = np.zeros((args.tokens, HEADS * HEAD_DIM), np.float32)
    counts = Trace().counts
    other = bench.eviction_buffer(64 << 20)

    def call(layer: int) -> None:
        keys, values = caches[layer]
        ops.attention_gqa(q, k, v, keys, values, args.position, HEADS, scores, out, counts)

    start = time.perf_counter()
    call(0)
    first_call = time.perf_counter() - start
    warm, warm_cpu, cold = [], [], []
    for _ in range(args.rounds):
        start, cpu = time.perf_counter(), time.process_time()
        for layer in range(LAYERS):
            call(layer)
        warm.append(time.perf_counter() - start)
        warm_cpu.append(time.process_time() - cpu)
        spent = 0.0
        for layer in range(LAYERS):
            if layer % 10 == 0:
                bench.touch(other)
            start = time.perf_counter()
            call(layer)
            spent += time.perf_counter() - start
        cold.append(spent)
    result = {
        "threads": args.threads,
        "position": args.position,
        "tokens": args.tokens,
        "first_call_s": first_call,
        "warm_ms_per_30_layers": 1e3 * statistics.median(warm),
        "warm_cpu_ms_per_30_layers": 1e3 * statistics.median(warm_cpu),
        "after_reads_ms_per_30_layers": 1e3 * statistics.median(cold),
        "warm_spread": [1e3 * min(warm), 1e3 * max(warm)],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
