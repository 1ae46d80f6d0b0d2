"""Grouped GEMVs (Q/K/V, gate/up as one parallel region each) against one call per matrix, interleaved.

Two measurements, one process, A and B taking turns so that a neighbour's load falls on both:
- kernels: the real 2B-4T shapes with random ternary weights (AVX2 i2s layout), 30 layers' worth cycled so
  the weights come from DRAM as in decode; `matvec` per member against one `matvec_group` (results checked
  equal).
- decode: the 2b-4t i2s preset loaded twice (grouping "on" and "off"), one decode step of each in turn;
  process CPU seconds per step (at 1 thread they do not count time other processes held the core) and wall.

    python benchmarks/grouped_gemv.py --threads 1 --rounds 200 --decode-steps 40 --json
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import numba
import numpy as np

from engine.formats import FORMATS
from engine.kernels import matvec, prepare_matrix
from engine.kernels.layouts import group_gemv, matvec_group
from engine.trace import Trace

GROUPS = {"qkv": [(2560, 2560), (640, 2560), (640, 2560)], "gate_up": [(6912, 2560), (6912, 2560)]}
LAYERS = 30


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def summary(times: list[float]) -> dict[str, float]:
    p10, p50, p90 = np.percentile(times, [10, 50, 90])
    return {"median": float(p50), "p10": float(p10), "p90": float(p90)}


def kernels(rounds: int) -> dict[str, dict]:
    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, size=2560, dtype=np.int8)
    counts = Trace().counts
    out = {}
    for name, shapes in GROUPS.items():
        layers = []
        for _ in range(LAYERS):
            mats = []
            for rows, cols in shapes:
                values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
                raw = FORMATS["i2s"].pack(values, np.float32(1))
                mats.append(prepare_matrix("i2s", raw, rows, cols, variant="avx2"))
            layers.append((mats, group_gemv(mats)))
        outs = tuple(np.zeros(r, np.float32) for r, _ in shapes)
        fused = tuple(np.zeros(r, np.float32) for r, _ in shapes)
        s = np.ones(len(shapes), np.float32)

        def separate(layer, layers=layers, outs=outs):
            for m, y in zip(layers[layer][0], outs, strict=True):
                matvec(m, q, 1.0, y, counts)

        def grouped(layer, layers=layers, fused=fused, s=s):
            matvec_group(layers[layer][1], q, s, fused, counts)

        separate(0)
        grouped(0)
        assert all(np.array_equal(a, b) for a, b in zip(outs, fused, strict=True))
        times = {"separate": [], "grouped": []}
        load = [loadavg()]
        for i in range(rounds):
            for way, fn in (("separate", separate), ("grouped", grouped)):
                start = time.perf_counter()
                fn(i % LAYERS)
                times[way].append(time.perf_counter() - start)
        load.append(loadavg())
        out[name] = {way: summary(t) for way, t in times.items()} | {"loadavg": load}
        out[name]["ratio"] = out[name]["separate"]["median"] / out[name]["grouped"]["median"]
    return out


def decode(threads: int, steps: int) -> dict:
    from engine.model import load_model
    from engine.synth import ensure_preset_model

    path = ensure_preset_model("2b-4t", "i2s")
    models = {way: load_model(path, threads=threads, grouping=way) for way in ("on", "off")}
    for m in models.values():
        m.warmup()
        m.prefill(list(range(1, 33)))
    cpu = {way: [] for way in models}
    wall = {way: [] for way in models}
    load = [loadavg()]
    for i in range(steps):
        for way, m in models.items():
            t0, c0 = time.perf_counter(), time.process_time()
            m.decode(1 + i % 100)
            wall[way].append(time.perf_counter() - t0)
            cpu[way].append(time.process_time() - c0)
    load.append(loadavg())
    return {
        "cpu_seconds": {way: summary(t) for way, t in cpu.items()},
        "wall_seconds": {way: summary(t) for way, t in wall.items()},
        "ratio_cpu": statistics.median(cpu["off"]) / statistics.median(cpu["on"]),
        "schedule": models["on"].schedule().get("grouping"),
        "loadavg": load,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=200, help="kernel calls of each way per group")
    ap.add_argument("--decode-steps", type=int, default=0, help="decode steps of each model (0: skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    result = {"threads": args.threads, "kernels": kernels(args.rounds)}
    if args.decode_steps:
        result["decode"] = decode(args.threads, args.decode_steps)
    if args.json:
        print(json.dumps(result))
        return
    for name, r in result["kernels"].items():
        for way in ("separate", "grouped"):
            x = r[way]
            print(
                f"{name} {way}: median {x['median'] * 1e6:.0f} us (p10 {x['p10'] * 1e6:.0f}, "
                f"p90 {x['p90'] * 1e6:.0f}), {args.threads} threads, load {r['loadavg']}"
            )
        print(f"{name} median ratio {r['ratio']:.2f}")
    if "decode" in result:
        d = result["decode"]
        for way in ("on", "off"):
            c, w = d["cpu_seconds"][way], d["wall_seconds"][way]
            print(f"decode grouping={way}: CPU {c['median'] * 1e3:.1f} ms, wall {w['median'] * 1e3:.1f} ms")
        print(f"decode CPU ratio off/on {d['ratio_cpu']:.3f}, load {d['loadavg']}")


if __name__ == "__main__":
    main()
