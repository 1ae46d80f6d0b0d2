"""Kernel speeds on this machine (`bench-kernels`): every ternary kernel family and the int8 logits on the
2B-4T shapes, cold and warm, against the read bandwidth measured alongside.

Each kernel runs on random weights of each shape. The cold time is the median of calls made right after a
cache-flushing read of a buffer larger than the cache (what a decode step sees: every weight was last touched
a whole model ago); the warm time is the median of back-to-back calls (the compute ceiling). GB/s counts the
bytes each kernel reads per call; the floor is the read bandwidth measured by this command, not assumed.
"""

import numba

from engine.constants import layer_matrix_shapes
from engine.kernels import bench
from engine.kernels.cpu import has_avx2, has_permw, has_vnni
from engine.model import set_threads
from harness.machine.bandwidth import probe_in_child
from harness.progress import SILENT, Progress

FAMILIES = ("i2s", "tq2_0", "tl1", "tl2", "logits")
# 2B-4T: hidden 2560, ffn 6912, 20 query heads and 5 KV heads of 128.
HIDDEN, FFN, Q_DIM, KV_DIM, VOCAB, LAYERS = 2560, 6912, 2560, 640, 128256, 30
DEFAULT_SHAPES = ((2560, 2560), (640, 2560), (6912, 2560), (2560, 6912))


def measure_kernels(
    families: list[str],
    shapes: list[tuple[int, int]],
    logits_shape: tuple[int, int],
    *,
    repeats: int,
    portable: bool,
    evict_mb: int,
    threads: int | None,
    progress: Progress = SILENT,
) -> dict:
    """Time each family on each shape (the logits on `logits_shape`), cold and warm; with `portable` the
    portable variant too. The result names the bandwidth, the CPU features and a 2B-4T decode estimate."""
    vocab, hidden = logits_shape
    set_threads(threads)
    variants = ["auto", "portable"] if portable else ["auto"]
    with progress.status("measuring read bandwidth (a child process)"):
        bandwidth = probe_in_child(numba.get_num_threads()).median_gbps
    evict = bench.eviction_buffer(evict_mb << 20)
    rows = []
    for family in families:
        for variant in variants:
            if family == "logits":
                with progress.status(f"logits {vocab}x{hidden} ({variant})"):
                    rows.append(bench.time_logits(vocab, hidden, repeats, evict, variant).as_dict())
                continue
            for r, c in shapes:
                with progress.status(f"{family} {r}x{c} ({variant})"):
                    rows.append(bench.time_matrix(family, r, c, repeats, evict, variant).as_dict())
    for row in rows:
        row["cold_fraction_of_floor"] = row["cold_gb_per_s"] / bandwidth
    return {
        "bandwidth_gb_per_s": bandwidth,
        "threads": threads,
        "cpu": {"avx512vnni": has_vnni(), "avx512bw": has_permw(), "avx2": has_avx2()},
        "results": rows,
        "decode_estimate": decode_estimate(rows, bandwidth),
    }


def decode_estimate(rows: list[dict], bandwidth: float) -> dict | None:
    """Seconds of one 2B-4T decode step's matrix and logits kernels if each ran cold as measured here.

    Only when every layer shape and the logits were measured for the i2s family; compared with the floor
    (all those bytes at the measured bandwidth).
    """
    cold = {(r["name"], r["variant"], tuple(r["shape"])): r for r in rows}
    out = {}
    for variant in sorted({r["variant"] for r in rows if r["name"] == "i2s"}):
        shapes = layer_matrix_shapes(HIDDEN, FFN, Q_DIM, KV_DIM)
        layer = [cold.get(("i2s", variant, tuple(s))) for s in shapes.values()]
        logits = [r for r in rows if r["name"] == "logits" and tuple(r["shape"]) == (VOCAB, HIDDEN)]
        if any(x is None for x in layer) or not logits:
            continue
        best = min(logits, key=lambda r: r["cold_seconds"])
        seconds = LAYERS * sum(x["cold_seconds"] for x in layer) + best["cold_seconds"]
        nbytes = LAYERS * sum(x["bytes"] for x in layer) + best["bytes"]
        out[variant] = {
            "seconds": seconds,
            "tokens_per_s": 1.0 / seconds,
            "bytes": nbytes,
            "floor_tokens_per_s": bandwidth * 1e9 / nbytes,
            "fraction_of_floor": nbytes / seconds / 1e9 / bandwidth,
            "logits_variant": best["variant"],
        }
    return out or None
