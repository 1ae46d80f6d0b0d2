"""Decode and prefill speed of the 2b-4t preset with a per-layer and per-kernel profile of a decode step.

Run from a checkout (PYTHONPATH selects which one, so two trees can be compared A/B interleaved):

    python benchmarks/decode_profile.py --threads 2 --steps 32 --json

Prints medians over the steps; the "kernels" profile needs a checkout whose Model.decode has `by_kernel`.
A decode profiled by kernel runs its layers step by step even where plain decode runs each layer as one
compiled call (Model.decode_block), so "profiled_step_ms" can exceed "decode_ms" by the calls' cost.
The *_cpu figures are process CPU seconds: with --threads 1 they do not count time the scheduler gave to
other processes, so they compare two trees fairly on a busy machine.
"""

import argparse
import inspect
import json
import resource
import statistics
import time

from engine.model import load_model
from engine.synth import ensure_preset_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--prefill-tokens", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    path = ensure_preset_model("2b-4t", "i2s")
    model = load_model(path, threads=args.threads)
    jit = model.warmup()
    ready = time.perf_counter() - t0
    vocab = model.config.vocab_size
    prompt = [(i * 7919) % vocab for i in range(args.prompt_tokens)]
    model.prefill(prompt)
    has_kernels = "by_kernel" in inspect.signature(model.decode).parameters
    steps, kernels = [], []
    token = 1
    for _ in range(args.steps):
        profile: dict = {}
        start = time.perf_counter()
        if has_kernels:
            model.decode(token, profile, by_kernel=True)
        else:
            model.decode(token, profile)
        profile["total"] = time.perf_counter() - start
        steps.append(profile)
        kernels.append(profile.get("kernels", {}))
    plain, plain_cpu = [], []
    for _ in range(args.steps):
        start, cpu = time.perf_counter(), time.process_time()
        model.decode(token)
        plain.append(time.perf_counter() - start)
        plain_cpu.append(time.process_time() - cpu)
    prefill, prefill_cpu = [], []
    long_prompt = [(i * 104729) % vocab for i in range(args.prefill_tokens)]
    for _ in range(3):
        model.reset()
        start, cpu = time.perf_counter(), time.process_time()
        model.prefill(long_prompt)
        prefill.append(time.perf_counter() - start)
        prefill_cpu.append(time.process_time() - cpu)

    def med(key: str) -> float:
        return statistics.median(s[key] for s in steps)

    n_layers = len(steps[0]["layers"])
    result = {
        "threads": args.threads,
        "load_seconds": model.load_seconds,
        "jit_seconds": jit,
        "ready_seconds": ready,
        "decode_tok_per_s": 1.0 / statistics.median(plain),
        "decode_ms": 1e3 * statistics.median(plain),
        "decode_cpu_ms": 1e3 * statistics.median(plain_cpu),
        "profiled_step_ms": 1e3 * med("total"),
        "forward_ms": 1e3 * med("forward"),
        "logits_ms": 1e3 * med("logits"),
        "layer_ms": [1e3 * statistics.median(s["layers"][i] for s in steps) for i in range(n_layers)],
        "kernels_ms": {k: 1e3 * statistics.median(d[k] for d in kernels) for k in kernels[0]},
        "prefill_tokens": args.prefill_tokens,
        "prefill_tok_per_s": args.prefill_tokens / statistics.median(prefill),
        "prefill_cpu_seconds": statistics.median(prefill_cpu),
        "weight_bytes_per_token": model.weight_bytes_per_token,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "file_mb": path.stat().st_size / 1e6,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key == "layer_ms":
            value = f"min {min(value):.2f} median {statistics.median(value):.2f} max {max(value):.2f}"
        elif key == "kernels_ms":
            value = ", ".join(f"{k} {v:.2f}" for k, v in sorted(value.items(), key=lambda kv: -kv[1]))
        print(f"{key}: {value}")


if __name__ == "__main__":
    main()
