"""Seconds from SIGINT to the exit of `bitnet-harness benchmark --preset tiny`, at seeded random moments.

Optionally with busy processes beside it (a loaded CI host). Prints the stop times as JSON. A run that exits
0 although signalled got the signal after its work was done (SIGINT is ignored from then on) or lost it:
for those the seconds between the signal and the exit are listed apart. Compare two trees by PYTHONPATH:

    PYTHONPATH=. python benchmarks/interrupt_latency.py --runs 60 --busy 2 --seed 9
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time

_ARGV = [
    sys.executable, "-c", "from harness.entry import main; main()", "benchmark", "--preset", "tiny",
    "--tokens", "4", "--repetitions", "1", "--warmup", "0", "--no-probe", "--no-timing", "--no-bandwidth",
]  # fmt: skip


def _run(env: dict[str, str], receipts: str) -> subprocess.Popen:
    """One benchmark, started in the scratch folder: PYTHONPATH, not the current folder, picks the tree."""
    return subprocess.Popen(
        [*_ARGV, "--receipts-dir", receipts],
        cwd=os.path.dirname(receipts),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--busy", type=int, default=0, help="busy-looping processes beside the benchmark")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    env = {**os.environ, "BITNET_HARNESS_CACHE": os.path.join(work, "cache"), "NUMBA_NUM_THREADS": "1"}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        full = []
        for i in range(2):  # the first run writes the model and may fill numba's cache
            start = time.monotonic()
            proc = _run(env, os.path.join(work, f"first{i}"))
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"benchmark failed: {err.strip().splitlines()[-1:]}")
            full.append(time.monotonic() - start)
        rng = random.Random(args.seed)
        stops, exited_0 = [], []
        for i in range(args.runs):
            proc = _run(env, os.path.join(work, f"r{i}"))
            time.sleep(rng.uniform(0.05, 0.95) * min(full))
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=60)
            (exited_0 if proc.returncode == 0 else stops).append(round(time.monotonic() - sent, 3))
    finally:
        for proc in busy:
            proc.kill()
    print(
        json.dumps(
            {
                "runs": args.runs,
                "busy": args.busy,
                "full_run_s": round(min(full), 2),
                "exited_0_s_after_the_signal": sorted(exited_0),
                "stop_s_median": statistics.median(stops) if stops else None,
                "stop_s_max": max(stops, default=None),
                "stops_over_0.5_s": sum(s > 0.5 for s in stops),
                "stop_s": sorted(stops),
            }
        )
    )


if __name__ == "__main__":
    main()
