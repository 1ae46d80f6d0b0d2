"""Every decode-floor measurement of docs/performance.md in one command, one JSON record per run.

    python benchmarks/perf_matrix.py --out /tmp/perf.json            # everything, 1 and 2 threads
    python benchmarks/perf_matrix.py --only membw,bench --threads 2   # a subset

Steps (each a fresh process, so thread counts and caches are the commands' own):
- membw:   benchmarks/membw.c (AVX2 loads, pthreads; built here with cc) against the harness's probe
           (harness.bandwidth.measure_read_bandwidth), interleaved per round, at each thread count;
           then the C reader over 0.3-4 GiB buffers in 4 KiB and huge pages.
- kernels: `bitnet-harness bench-kernels --portable --json` (cold/warm GB/s of each GEMV against the floor).
- profile: benchmarks/decode_profile.py (per-kernel decode profile, prefill of 128 tokens).
- bench:   `bitnet-harness benchmark` (the default 2b-4t i2s benchmark with probe, timing and floor).
- llama:   `bitnet-harness benchmark --vs-llama-cpp --prompt-tokens 128 --tokens 64 --repetitions 5`.
- cpu:     benchmarks/cpu_seconds.py (CPU seconds of the engine, llama.cpp on the TQ2_0 file and llama.cpp
           on the TQ1_0 copy of the same model, rounds interleaved).
- prefetch: the AVX2 kernels' prefetch sweep (`engine.kernels.avx2.time_prefetch`, GB/s per distance) on the
  2B-4T row widths: matrix 2560 and 6912 columns, logits 2560.
- grouped: benchmarks/grouped_gemv.py (Q/K/V as three parallel regions or one).
- hugepage: benchmarks/hugepage_weights.py (the GEMVs from file pages or a huge-page copy).
Every record carries the load average before and after it: on a shared machine that is the noise.
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = ("membw", "kernels", "profile", "bench", "llama", "cpu", "prefetch", "grouped", "hugepage")
SWEEP = (
    "import json, sys, numba; from engine.kernels.avx2 import time_prefetch; "
    "numba.set_num_threads(int(sys.argv[1])); "
    "widths = (('matrix', 2560), ('matrix', 6912), ('logits', 2560)); "
    "r = {f'{k} {c}': time_prefetch(k, c) for k, c in widths}; "
    "print(json.dumps({k: {str(d): v for d, v in x.items()} for k, x in r.items()}))"
)
PROBE = (
    "import json, sys, numba; from harness.machine.bandwidth import measure_read_bandwidth as m; "
    "numba.set_num_threads(int(sys.argv[1])); print(json.dumps({'gb_per_s': m()}))"
)


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def run_json(cmd: list[str]) -> dict:
    """Run a command whose stdout ends with one JSON document; return it (stderr is passed through)."""
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    start = out.find("{")
    return json.loads(out[start:])


def record(step: str, threads: int | None, cmd: list[str], parse) -> dict:
    before = loadavg()
    t0 = time.perf_counter()
    result = parse(cmd)
    return {
        "step": step,
        "threads": threads,
        "command": " ".join(cmd),
        "loadavg_before": before,
        "loadavg_after": loadavg(),
        "seconds": time.perf_counter() - t0,
        "result": result,
    }


def build_membw() -> str:
    exe = str(Path(tempfile.gettempdir()) / f"membw-{os.getuid()}")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("perf_matrix: membw needs a C compiler (cc)")
    subprocess.run([cc, "-O2", "-mavx2", "-pthread", "-o", exe, str(HERE / "membw.c")], check=True)
    return exe


def membw_steps(threads: list[int], rounds: int) -> list[dict]:
    exe = build_membw()
    out = []
    for _ in range(rounds):
        for t in threads:
            out.append(
                record("membw", t, [exe, "--threads", str(t), "--gib", "1", "--passes", "9"], run_json)
            )
            out.append(record("probe", t, [sys.executable, "-c", PROBE, str(t)], run_json))
    for gib in ("0.3", "1", "2", "4"):
        for t in threads:
            for pages in ([], ["--huge"]):
                cmd = [exe, "--threads", str(t), "--gib", gib, "--passes", "7", *pages]
                out.append(record("membw_sweep", t, cmd, run_json))
    return out


def tq1_0_copy() -> str:
    """The llama.cpp-ready TQ1_0 file of the 2b-4t bitnet preset (written once, like the TQ2_0 copy)."""
    from engine.synth import ensure_preset_model
    from harness.peers.llama_cpp import reference_file

    return str(reference_file(ensure_preset_model("2b-4t", "tq1_0", "bitnet")).path)


def harness(*args: str) -> list[str]:
    """The `bitnet-harness` command of this interpreter's environment."""
    return [sys.executable, "-c", "from harness.entry import main; main()", *args]


def bench_summary(cmd: list[str]) -> dict:
    receipt = run_json(cmd)["receipt"]
    bench = receipt["phases"]["benchmark"]["summary"]
    out = {
        "tokens_per_second": receipt["tokens_per_second"],
        "prefill_seconds_p50": bench["prefill_seconds"]["p50"],
        "decode_latency_p50": bench["decode_latency_seconds"]["p50"],
        "bandwidth": receipt.get("bandwidth"),
        "variants": receipt["kernel_choice"].get("variants"),
        "prompt_tokens": receipt["prompt"].get("tokens") if isinstance(receipt.get("prompt"), dict) else None,
    }
    timing = receipt["phases"].get("timing")
    if timing:
        out["timing_p50"] = {k: v.get("p50") for k, v in timing["percentiles"].items()}
    if "peer" in receipt:
        peer = receipt["peer"]
        out["peer"] = {k: v for k, v in peer.items() if k not in ("benchmark",)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(STEPS), help=f"comma list of {', '.join(STEPS)}")
    ap.add_argument("--threads", default="1,2", help="comma list of thread counts")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of membw / probe")
    ap.add_argument("--out", type=Path, default=None, help="write the records here as JSON too")
    args = ap.parse_args()
    steps = [s for s in args.only.split(",") if s]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise SystemExit(f"perf_matrix: unknown step(s) {bad}; choose from {', '.join(STEPS)}")
    threads = [int(t) for t in args.threads.split(",")]
    receipts = tempfile.mkdtemp(prefix="perf-matrix-")
    records: list[dict] = []
    if "membw" in steps:
        records += membw_steps(threads, args.rounds)
    for t in threads:
        th = ["--threads", str(t)]
        if "kernels" in steps:
            records.append(
                record("kernels", t, harness("bench-kernels", *th, "--portable", "--json"), run_json)
            )
        if "profile" in steps:
            cmd = [sys.executable, str(HERE / "decode_profile.py"), *th, "--steps", "16", "--json"]
            records.append(record("profile", t, cmd, run_json))
        if "bench" in steps:
            cmd = harness("benchmark", *th, "--json", "--receipts-dir", receipts)
            records.append(record("bench", t, cmd, bench_summary))
        if "llama" in steps:
            extra = ["--prompt-tokens", "128", "--tokens", "64", "--repetitions", "5"]
            cmd = harness("benchmark", "--vs-llama-cpp", *th, *extra, "--json", "--receipts-dir", receipts)
            records.append(record("llama", t, cmd, bench_summary))
        if "cpu" in steps:
            cmd = [sys.executable, str(HERE / "cpu_seconds.py"), *th, "--also-llama", tq1_0_copy()]
            records.append(record("cpu", t, cmd, run_json))
        if "prefetch" in steps:
            records.append(record("prefetch", t, [sys.executable, "-c", SWEEP, str(t)], run_json))
        if "grouped" in steps:
            cmd = [sys.executable, str(HERE / "grouped_gemv.py"), *th, "--rounds", "300", "--json"]
            records.append(record("grouped", t, cmd, run_json))
        if "hugepage" in steps:
            cmd = [sys.executable, str(HERE / "hugepage_weights.py"), *th, "--json"]
            records.append(record("hugepage", t, cmd, run_json))
    doc = {
        "host": {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "commit": subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "records": records,
    }
    text = json.dumps(doc, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
