"""Measured memory read bandwidth: the floor a memory-bound decode step is compared against.

A probe reads a buffer of at least 4x the last-level cache and at least 1 GiB (so no pass is served from
cache), held in 4 KiB pages as the memory-mapped weights are, with the run's thread count. One untimed pass
warms the threads and the page tables; every further pass is timed, and the probe's figure is the median pass.

A run probes in a child process (`probe_in_child`): the buffer is returned to the system when the child exits,
before the measured phases start, so the run's peak RSS is the engine's alone. A benchmark probes before and
after its measured phases; the floor is the median of every pass of both probes, and when the two probes'
medians disagree by more than 10 % the run is marked noisy instead of trusting either one.
"""

from __future__ import annotations

import json
import mmap
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np

from harness.errors import HarnessError
from harness.machine.host import last_level_cache_bytes

MIN_PROBE_BYTES = 1 << 30
LLC_MULTIPLE = 4
PASSES = 9
DISAGREEMENT_LIMIT = 0.10
CHILD_TIMEOUT_S = 300.0
_CHUNK_WORDS = 4096  # 32 KiB per parallel work item


@numba.njit(parallel=True, cache=True)
def _sum_chunks(words: np.ndarray) -> np.int64:
    n_chunks = words.shape[0]
    total = np.int64(0)
    for c in numba.prange(n_chunks):
        acc = np.int64(0)
        for j in range(words.shape[1]):
            acc += words[c, j]
        total += acc
    return total


def probe_bytes(llc_bytes: int | None = None) -> int:
    """Buffer size: the larger of 1 GiB and 4x the last-level cache, in whole 32 KiB chunks."""
    llc = last_level_cache_bytes() if llc_bytes is None else llc_bytes
    nbytes = max(MIN_PROBE_BYTES, LLC_MULTIPLE * (llc or 0))
    chunk = _CHUNK_WORDS * 8
    return -(-nbytes // chunk) * chunk


@dataclass(frozen=True)
class Probe:
    """One probe: the GB/s (1e9 bytes) of each timed pass over `buffer_bytes` with `threads` threads."""

    samples_gbps: tuple[float, ...]
    buffer_bytes: int
    threads: int

    @property
    def median_gbps(self) -> float:
        return float(np.median(self.samples_gbps))

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples_gbps": list(self.samples_gbps),
            "median_gbps": self.median_gbps,
            "buffer_bytes": self.buffer_bytes,
            "threads": self.threads,
        }


def measure_read_bandwidth(
    nbytes: int | None = None, passes: int = PASSES, threads: int | None = None
) -> Probe:
    """Probe in this process (its memory counts in this process's peak RSS; see `probe_in_child`)."""
    if passes < 1:
        raise HarnessError(f"the bandwidth probe needs at least 1 pass (got {passes})")
    if threads is not None:
        numba.set_num_threads(threads)
    nbytes = probe_bytes() if nbytes is None else nbytes
    n_chunks = max(nbytes // (8 * _CHUNK_WORDS), 1)
    region = mmap.mmap(-1, n_chunks * _CHUNK_WORDS * 8)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        region.madvise(mmap.MADV_NOHUGEPAGE)  # 4 KiB pages, as the page cache holds the model file
    try:
        words = np.frombuffer(region, dtype=np.int64).reshape(n_chunks, _CHUNK_WORDS)
        words.fill(1)
        _sum_chunks(words)  # untimed: compiles or loads the kernel, wakes the threads, walks the page tables
        samples = []
        for _ in range(passes):
            start = time.perf_counter()
            _sum_chunks(words)
            samples.append(words.nbytes / (time.perf_counter() - start) / 1e9)
        del words
    finally:
        region.close()
    return Probe(tuple(samples), n_chunks * _CHUNK_WORDS * 8, numba.get_num_threads())


def probe_in_child(threads: int, passes: int = PASSES, nbytes: int | None = None) -> Probe:
    """Probe in a child process, so the buffer never enters this process's memory or its peak RSS."""
    nbytes = probe_bytes() if nbytes is None else nbytes
    cmd = [sys.executable, "-m", __name__, str(nbytes), str(passes), str(threads)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"the read bandwidth probe did not finish in {CHILD_TIMEOUT_S:g} s") from None
    except OSError as exc:
        raise HarnessError(f"cannot start the read bandwidth probe: {exc}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise HarnessError(f"the read bandwidth probe failed (exit {done.returncode}): {last}")
    try:
        data = json.loads(done.stdout)
        return Probe(tuple(data["samples_gbps"]), int(data["buffer_bytes"]), int(data["threads"]))
    except (ValueError, KeyError, TypeError):
        shown = done.stdout.strip()[:200]
        raise HarnessError(f"the read bandwidth probe printed no result: {shown!r}") from None


@dataclass(frozen=True)
class Floor:
    """The probes around a run: the floor is the median of all their passes; disagreement marks noise."""

    probes: tuple[Probe, ...]

    @property
    def read_gbps(self) -> float:
        return float(np.median([s for p in self.probes for s in p.samples_gbps]))

    @property
    def spread(self) -> float:
        """(max - min) / median of every pass of every probe."""
        pooled = [s for p in self.probes for s in p.samples_gbps]
        return (max(pooled) - min(pooled)) / self.read_gbps

    @property
    def disagreement(self) -> float | None:
        """|before - after| / the larger, of the probes' medians; None with one probe."""
        if len(self.probes) < 2:
            return None
        medians = [p.median_gbps for p in self.probes]
        return (max(medians) - min(medians)) / max(medians)

    @property
    def noisy_reason(self) -> str | None:
        d = self.disagreement
        if d is None or d <= DISAGREEMENT_LIMIT:
            return None
        before, after = (p.median_gbps for p in self.probes[:2])
        return (
            f"read bandwidth before and after the run disagree by {d:.0%} ({before:.1f} vs {after:.1f} GB/s; "
            f"limit {DISAGREEMENT_LIMIT:.0%})"
        )

    def measurement(self) -> dict[str, Any]:
        """The receipt's `bandwidth` fields that describe the measurement itself."""
        return {
            "method": "median of every timed pass of the probes, each in a child process, 4 KiB pages",
            "probes": [p.to_dict() for p in self.probes],
            "spread": self.spread,
            "disagreement": self.disagreement,
            "noisy": self.noisy_reason is not None,
        }


def _child_main(argv: list[str]) -> None:
    """`python -m harness.machine.bandwidth BYTES PASSES THREADS`: one probe, JSON on stdout."""
    nbytes, passes, threads = (int(a) for a in argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if soft != hard:  # a parent's --max-memory caps its own data segment; this process is not the engine
        resource.setrlimit(resource.RLIMIT_DATA, (hard, hard))
    print(json.dumps(measure_read_bandwidth(nbytes, passes, threads).to_dict()))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
