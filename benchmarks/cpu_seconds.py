"""Process CPU seconds of a 128-token prefill and of decode steps: the engine and llama.cpp, same file.

On a machine shared with other jobs, wall-clock time measures the scheduler; CPU seconds of a one-thread run
do not count the time other processes held the core, so the engine and llama.cpp compare fairly. Rounds
alternate engine and llama.cpp (each model loaded once, in this process). Extra llama.cpp files (e.g. the
TQ1_0 copy of the same model) join the rotation:

    python benchmarks/cpu_seconds.py --threads 1                        # 2b-4t bitnet preset, TQ2_0 copy
    python benchmarks/cpu_seconds.py --threads 1 --also-llama FILE.gguf  # a second llama.cpp file
    PYTHONPATH=/path/to/other/checkout python benchmarks/cpu_seconds.py --no-llama   # another engine tree
"""

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

PROMPT = [(i * 104729) % 128256 for i in range(128)]


def engine_runner(path: Path, threads: int) -> tuple[Callable[[], float], Callable[[], float], dict]:
    from engine.model import load_model

    model = load_model(path, threads=threads)
    model.warmup()

    def prefill() -> float:
        model.reset()
        start = time.process_time()
        model.prefill(PROMPT)
        return time.process_time() - start

    def decode() -> float:
        start = time.process_time()
        model.decode(1)
        return time.process_time() - start

    return prefill, decode, {"variants": model.kernel_variants()}


def llama_runner(path: Path, threads: int) -> tuple[Callable[[], float], Callable[[], float], dict]:
    from harness.peers.vs_llama_cpp import LlamaCppRunner

    llm = LlamaCppRunner(path, 256, threads).llm

    def prefill() -> float:
        llm.reset()
        start = time.process_time()
        llm.eval(PROMPT)
        return time.process_time() - start

    def decode() -> float:
        start = time.process_time()
        llm.eval([1])
        return time.process_time() - start

    return prefill, decode, {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--file", type=Path, default=None, help="GGUF file (default: the 2b-4t bitnet TQ2_0 copy)"
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12, help="decode steps per round")
    ap.add_argument("--no-llama", action="store_true", help="time the engine only")
    ap.add_argument("--also-llama", type=Path, action="append", default=[], help="another llama.cpp file")
    args = ap.parse_args()
    path = args.file
    if path is None:
        from engine.synth import ensure_preset_model
        from harness.peers.llama_cpp import reference_file

        path = reference_file(ensure_preset_model("2b-4t", "i2s", "bitnet")).path
    runners = {"engine": engine_runner(path, args.threads)}
    if not args.no_llama:
        runners["llama.cpp"] = llama_runner(path, args.threads)
        for extra in args.also_llama:
            runners[f"llama.cpp {extra.name}"] = llama_runner(extra, args.threads)
    samples: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "decode": []} for name in runners}
    for _ in range(args.rounds):
        for name, (prefill, decode, _) in runners.items():
            samples[name]["prefill"].append(prefill())
            samples[name]["decode"].extend(decode() for _ in range(args.steps))
    out = {"file": str(path), "threads": args.threads, "prompt_tokens": len(PROMPT), "results": {}}
    for name, s in samples.items():
        out["results"][name] = {
            "prefill_cpu_seconds": statistics.median(s["prefill"]),
            "prefill_cpu_range": [min(s["prefill"]), max(s["prefill"])],
            "decode_cpu_ms": 1e3 * statistics.median(s["decode"]),
            "decode_cpu_ms_p10_p90": [1e3 * x for x in statistics.quantiles(s["decode"], n=10)[::8]],
            **runners[name][2],
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
