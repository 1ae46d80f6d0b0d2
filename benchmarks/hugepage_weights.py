"""The i2s GEMV over every matrix of the 2b-4t i2s preset: from the file's 4 KB pages or a huge-page copy.

The read-bandwidth probe sums a buffer on transparent huge pages while the weights are file pages; this
measures whether the kernels themselves read faster from huge pages (same bytes, exact). Sweeps alternate:

    python benchmarks/hugepage_weights.py --threads 1 --sweeps 9 --json
"""

import argparse
import json
import statistics
import time

import numba
import numpy as np

from engine.kernels import matvec, prepare_matrix
from engine.kernels.aligned import aligned_zeros
from engine.loader import load_file
from engine.synth import ensure_preset_model
from engine.trace import Trace

HUGE = 2 << 20


def huge_copy(raw: np.ndarray) -> np.ndarray:
    """The bytes in a 2 MB-aligned numpy buffer (numpy asks the kernel for transparent huge pages)."""
    out = aligned_zeros((raw.size,), np.uint8, HUGE)
    out[:] = raw.reshape(-1)
    return out


def anon_huge_kb() -> int:
    with open("/proc/self/smaps_rollup") as fh:
        return next((int(line.split()[1]) for line in fh if line.startswith("AnonHugePages")), 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sweeps", type=int, default=9)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    mf = load_file(ensure_preset_model("2b-4t", "i2s"))
    mats: dict[str, list] = {"file pages": [], "huge-page copy": []}
    for name in mf.gguf.tensors:
        if mf.flavor(name) != "i2s":
            continue
        t = mf.tensor(name)
        rows, cols = t.shape
        mats["file pages"].append(prepare_matrix("i2s", t.data, rows, cols))
        mats["huge-page copy"].append(prepare_matrix("i2s", huge_copy(np.asarray(t.data)), rows, cols))
    nbytes = sum(m.nbytes_read for m in mats["file pages"])
    rng = np.random.default_rng(0)
    q = {c: rng.integers(-127, 128, c, dtype=np.int8) for c in {m.cols for m in mats["file pages"]}}
    out = {r: np.zeros(r, np.float32) for r in {m.rows for m in mats["file pages"]}}
    counts = Trace().counts

    def sweep(ms: list) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        for m in ms:
            matvec(m, q[m.cols], 1.0, out[m.rows], counts)
        return nbytes / (time.perf_counter() - wall) / 1e9, nbytes / (time.process_time() - cpu) / 1e9

    for ms in mats.values():
        sweep(ms)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in mats}
    for _ in range(args.sweeps):
        for name, ms in mats.items():
            samples[name].append(sweep(ms))
    result = {
        "threads": args.threads,
        "bytes": nbytes,
        "anon_huge_pages_kb": anon_huge_kb(),
        "gb_per_s_wall_median": {k: statistics.median(a for a, _ in v) for k, v in samples.items()},
        "gb_per_cpu_second_median": {k: statistics.median(b for _, b in v) for k, v in samples.items()},
    }
    print(json.dumps(result, indent=1) if args.json else result)


if __name__ == "__main__":
    main()
