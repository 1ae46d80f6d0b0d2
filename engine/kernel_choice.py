"""`--kernel auto`: pick the fastest ternary kernel family per matrix shape by timing it on this CPU.

Each distinct (flavor, rows, cols) is timed once per family with a real matrix of the model; the result is
cached in a JSON file keyed by CPU model, CPU flags, numba version, thread count and the kernels' source, so
later loads on the same machine skip the timing. The choice and the timings are reported, never guessed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numba
import numpy as np

from engine.atomic import atomic_write
from engine.errors import EngineError
from engine.trace import Trace

FAMILIES = ("i2s", "tl1", "tl2")
CACHE_ENV = "BITNET_HARNESS_CACHE"
CACHE_FILE = "kernel_choice.json"
_MIN_REPS = 5
_MAX_REPS = 50
_BUDGET_SECONDS = 0.04


@dataclass
class Selection:
    """Kernel family per matrix shape, with the evidence: seconds per matvec of every family tried."""

    mode: str  # "auto" or the family forced by the caller
    kernels: dict[str, str]  # shape key -> family
    timings: dict[str, dict[str, float | str]] = field(
        default_factory=dict
    )  # shape key -> family -> s or error
    cached: bool = False
    seconds: float = 0.0
    cache_path: str | None = None

    def kernel_for(self, flavor: str, rows: int, cols: int) -> str:
        return self.kernels[shape_key(flavor, rows, cols)]

    def as_dict(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "kernels": dict(self.kernels),
            "timings": {k: dict(v) for k, v in self.timings.items()},
            "cached": self.cached,
            "seconds": self.seconds,
            "cache_path": self.cache_path,
        }


def shape_key(flavor: str, rows: int, cols: int) -> str:
    return f"{flavor}:{rows}x{cols}"


def fixed(samples: Mapping[tuple[str, int, int], np.ndarray], kernel: str) -> Selection:
    """Every shape uses the family the caller named."""
    if kernel not in FAMILIES:
        raise EngineError(f"unknown kernel family {kernel!r}; choose one of {', '.join(FAMILIES)}")
    return Selection(mode=kernel, kernels={shape_key(*key): kernel for key in samples})


def choose(samples: Mapping[tuple[str, int, int], np.ndarray], cache_dir: Path | None = None) -> Selection:
    """Time every family on one raw matrix per (flavor, rows, cols); reuse this CPU's cached verdicts."""
    start = time.perf_counter()
    path = (cache_dir or default_cache_dir()) / CACHE_FILE
    store = _read_cache(path)
    key = machine_key()
    known = store.get(key, {})
    sel = Selection(mode="auto", kernels={}, cache_path=str(path))
    missing = []
    for shape in samples:
        entry = known.get(shape_key(*shape))
        if (
            isinstance(entry, dict)
            and entry.get("choice") in FAMILIES
            and isinstance(entry.get("timings"), dict)
        ):
            sel.kernels[shape_key(*shape)] = entry["choice"]
            sel.timings[shape_key(*shape)] = dict(entry["timings"])
        else:
            missing.append(shape)
    for flavor, rows, cols in missing:
        timings = time_families(flavor, samples[(flavor, rows, cols)], rows, cols)
        measured = {fam: t for fam, t in timings.items() if isinstance(t, float)}
        if not measured:
            raise EngineError(f"no kernel family can run a {flavor} {rows}x{cols} matrix: {timings}")
        choice = min(measured, key=lambda fam: (measured[fam], FAMILIES.index(fam)))
        sel.kernels[shape_key(flavor, rows, cols)] = choice
        sel.timings[shape_key(flavor, rows, cols)] = timings
        known[shape_key(flavor, rows, cols)] = {"choice": choice, "timings": timings}
    sel.cached = not missing
    if missing:
        store[key] = known
        if not _write_cache(path, store):
            sel.cache_path = None
    sel.seconds = time.perf_counter() - start
    return sel


def time_families(flavor: str, raw: np.ndarray, rows: int, cols: int) -> dict[str, float | str]:
    """Best seconds per matvec of each family on this matrix; a family that cannot hold it gets its error.

    The families are timed in turns (one call each per round), so a burst of load from other processes
    falls on all of them alike instead of deciding the verdict; the best call of each is kept.
    """
    from engine.kernels import matvec, prepare_matrix

    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, cols, dtype=np.int8)
    out = np.zeros(rows, np.float32)
    scratch = Trace().counts  # timing runs stay out of the model's trace
    result: dict[str, float | str] = {}
    mats = {}
    for fam in FAMILIES:
        try:
            mats[fam] = prepare_matrix(flavor, raw, rows, cols, fam)
        except EngineError as exc:
            result[fam] = f"unsupported: {exc}"
            continue
        matvec(mats[fam], q, 1.0, out, scratch)
    best = dict.fromkeys(mats, float("inf"))
    total, reps = 0.0, 0
    while reps < _MIN_REPS or (total < _BUDGET_SECONDS * len(mats) and reps < _MAX_REPS):
        for fam, m in mats.items():
            t0 = time.perf_counter()
            matvec(m, q, 1.0, out, scratch)
            dt = time.perf_counter() - t0
            best[fam] = min(best[fam], dt)
            total += dt
        reps += 1
    result.update(best)
    return {fam: result[fam] for fam in FAMILIES}


def default_cache_dir() -> Path:
    """$BITNET_HARNESS_CACHE, else ~/.cache/bitnet-harness."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "bitnet-harness"


def machine_key() -> str:
    """What a timing verdict depends on: CPU model and flags, numba version, threads, the kernels' source and
    this module's (the timing method)."""
    model, flags = _cpu_identity()
    parts = [
        model,
        hashlib.sha256(flags.encode()).hexdigest()[:16],
        f"numba {numba.__version__}",
        f"threads {numba.get_num_threads()}",
        f"kernels {_source_digest()}",
    ]
    return " | ".join(parts)


@lru_cache(maxsize=1)
def _source_digest() -> str:
    """Digest of the kernels' source and this module's (the timing method): fixed for a process."""
    kernels_dir = Path(__file__).parent / "kernels"
    src = hashlib.sha256()
    for f in [Path(__file__), *sorted(kernels_dir.glob("*.py"))]:
        src.update(f.name.encode() + b"\0" + f.read_bytes())
    return src.hexdigest()[:16]


@lru_cache(maxsize=1)
def _cpu_identity() -> tuple[str, str]:
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = " ".join(sorted((fields.get("flags") or fields.get("Features") or "").split()))
    return model, flags


def _read_cache(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, store: dict[str, dict]) -> bool:
    """Best effort: an unwritable cache only costs the timing again next load."""
    try:
        with atomic_write(path) as fh:
            fh.write(json.dumps(store, indent=1, sort_keys=True).encode())
    except OSError:
        return False
    return True


# ---------------------------------------------------------------- AVX2 prefetch distances
PREFETCH_FILE = "prefetch_choice.json"
# a shorter distance within this fraction of the fastest one wins (noise must not buy a longer one)
_PREFETCH_TOLERANCE = 0.03


@dataclass
class PrefetchChoice:
    """Software prefetch distances (bytes ahead) the AVX2 kernels use on this host, with the evidence."""

    matrix: int  # ternary GEMVs
    logits: int  # int8 logits
    timings: dict[str, dict[str, float]]  # "matrix" / "logits" -> distance -> best GB/s
    threads: int
    cached: bool = False
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "matrix_bytes": self.matrix,
            "logits_bytes": self.logits,
            "timings_gb_per_s": {k: dict(v) for k, v in self.timings.items()},
            "threads": self.threads,
            "cached": self.cached,
            "seconds": self.seconds,
        }


_prefetch: dict[str, PrefetchChoice] = {}  # machine key -> its choice, measured or read in this process
_applied: list[PrefetchChoice] = []  # the choice in avx2.SCHEDULE now


def _fastest(gbps: Mapping[str, float]) -> int:
    top = max(gbps.values())
    return min(int(d) for d, v in gbps.items() if v >= top * (1 - _PREFETCH_TOLERANCE))


def prefetch_choice(cache_dir: Path | None = None) -> PrefetchChoice:
    """The AVX2 kernels' prefetch distances for this machine, applied to `avx2.SCHEDULE`.

    Measured once per machine key (CPU, flags, numba, threads, kernel source) by `avx2.time_prefetch` and
    cached beside the family verdicts; later calls in the process return the applied choice.
    """
    from engine.kernels import avx2

    key = machine_key()
    if key not in _prefetch:
        _prefetch[key] = _measure_or_read_prefetch(key, cache_dir)
    choice = _prefetch[key]
    avx2.SCHEDULE[avx2.PF_MATRIX] = choice.matrix
    avx2.SCHEDULE[avx2.PF_LOGITS] = choice.logits
    _applied[:] = [choice]
    return choice


def _measure_or_read_prefetch(key: str, cache_dir: Path | None) -> PrefetchChoice:
    from engine.kernels import avx2

    start = time.perf_counter()
    path = (cache_dir or default_cache_dir()) / PREFETCH_FILE
    store = _read_cache(path)
    entry = store.get(key)
    valid = (
        isinstance(entry, dict)
        and all(isinstance(entry.get(k), dict) and entry[k] for k in ("matrix", "logits"))
        and all(isinstance(v, float) for k in ("matrix", "logits") for v in entry[k].values())
    )
    if valid:
        timings = {k: dict(entry[k]) for k in ("matrix", "logits")}
    else:
        measured = avx2.time_prefetch()
        timings = {k: {str(d): v for d, v in measured[k].items()} for k in ("matrix", "logits")}
        store[key] = timings
        _write_cache(path, store)
    return PrefetchChoice(
        matrix=_fastest(timings["matrix"]),
        logits=_fastest(timings["logits"]),
        timings=timings,
        threads=numba.get_num_threads(),
        cached=valid,
        seconds=time.perf_counter() - start,
    )


def applied_prefetch() -> PrefetchChoice | None:
    """The prefetch choice the AVX2 kernels run with now (None before any AVX2 kernel was prepared)."""
    return _applied[0] if _applied else None
