"""Wall-clock prefill and decode speed of the engine on one GGUF file, and the kernels its matrices run.

Three rounds of a 128-token prefill and of 24 decode steps from position 32; medians. Run the same file from
two checkouts in turn (PYTHONPATH chooses the tree) to compare them interleaved:

    for i in 1 2 3; do
      PYTHONPATH=/tmp/base python benchmarks/file_speed.py --threads 2 FILE.gguf
      PYTHONPATH=.         python benchmarks/file_speed.py --threads 2 FILE.gguf
    done
"""

import argparse
import statistics
import time
from pathlib import Path

from engine.model import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = load_model(args.file, threads=args.threads)
    model.warmup()
    vocab = model.config.vocab_size
    prompt = [(i * 104729) % vocab for i in range(128)]
    prefill, decode = [], []
    for _ in range(3):
        model.reset()
        start = time.perf_counter()
        model.prefill(prompt)
        prefill.append(time.perf_counter() - start)
        model.reset()
        model.prefill(prompt[:32])
        for i in range(24):
            start = time.perf_counter()
            model.decode(5 + i)
            decode.append(time.perf_counter() - start)
    kernels = sorted(set(model.kernel_choices.values()))
    prefill_rate, decode_rate = 128 / statistics.median(prefill), 1 / statistics.median(decode)
    print(
        f"{args.file.name} threads {args.threads}: prefill of 128 {prefill_rate:.1f} tok/s, "
        f"decode {decode_rate:.2f} tok/s, GEMV kernels {kernels}"
    )


if __name__ == "__main__":
    main()
