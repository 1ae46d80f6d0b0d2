"""`--kernel auto`: the ternary kernel family of each matrix shape, chosen by timing the families on this CPU.

Each distinct (flavor, rows, cols) is timed with a real matrix of the model, in interleaved rounds: every
round times each family once (a batch of back-to-back matvecs long enough to read the clock well), starting
with a different family each round, so drift and a neighbour's bursts fall on every family alike. A family's
time is the median of its rounds, its spread the interquartile range over that median.

The verdict keeps the default family (i2s) unless another is faster in every round and by at least 5 % in the
median; when any family's spread is above 25 % the rounds are run again, and if they stay that noisy the
default is kept and nothing is cached, so the next load tunes afresh. Verdicts that passed the noise check
are cached in a JSON file keyed by the CPU (model and flags), the thread count, numba's version and the
engine's version (the distribution's version and a digest of the kernels' source and this module);
`retune=True` (`--retune`) times again and replaces them. The choice, the timings and the reason are
reported, never guessed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numba
import numpy as np

from engine.atomic import atomic_write
from engine.errors import EngineError
from engine.trace import Trace

FAMILIES = ("i2s", "tl1", "tl2")
DEFAULT_FAMILY = "i2s"
CACHE_ENV = "BITNET_HARNESS_CACHE"
CACHE_FILE = "kernel_choice.json"
ROUNDS = 7
ATTEMPTS = 2
BATCH_SECONDS = 2e-3  # each timed sample is a batch of calls at least this long for the fastest family
MAX_BATCH_CALLS = 2000
MAX_SPREAD = 0.25  # interquartile range / median of a family's rounds above this: the timing is noise
MIN_GAIN = 0.05  # another family must beat the default by this much in the median round


@dataclass
class ShapeTiming:
    """How one shape's family was chosen: seconds per matvec of every round, the verdict and its reason."""

    choice: str
    reason: str
    noisy: bool
    rounds: dict[str, list[float]] = field(default_factory=dict)  # family -> seconds per call, per round
    errors: dict[str, str] = field(default_factory=dict)  # family -> why it cannot hold this matrix
    calls_per_round: int = 0

    @property
    def median(self) -> dict[str, float]:
        return {fam: float(np.median(r)) for fam, r in self.rounds.items()}

    @property
    def spread(self) -> dict[str, float]:
        """Interquartile range over the median of each family's rounds."""
        out = {}
        for fam, r in self.rounds.items():
            q1, q2, q3 = np.percentile(r, [25, 50, 75])
            out[fam] = float((q3 - q1) / q2) if q2 > 0 else 0.0
        return out

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "median_seconds": self.median, "spread": self.spread}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ShapeTiming:
        return cls(
            choice=str(data["choice"]),
            reason=str(data["reason"]),
            noisy=bool(data["noisy"]),
            rounds={str(k): [float(x) for x in v] for k, v in dict(data["rounds"]).items()},  # type: ignore[arg-type]
            errors={str(k): str(v) for k, v in dict(data.get("errors") or {}).items()},  # type: ignore[arg-type]
            calls_per_round=int(data.get("calls_per_round") or 0),  # type: ignore[arg-type]
        )


@dataclass
class Selection:
    """Kernel family per matrix shape; for `auto`, how each was chosen and where the verdicts are cached."""

    mode: str  # "auto" or the family forced by the caller
    kernels: dict[str, str]  # shape key -> family
    shapes: dict[str, ShapeTiming] = field(default_factory=dict)  # shape key -> its timing ("auto" only)
    cached: dict[str, bool] = field(default_factory=dict)  # shape key -> verdict read from the cache
    retuned: bool = False
    seconds: float = 0.0
    cache_path: str | None = None
    cache_key: dict[str, object] = field(default_factory=dict)

    def kernel_for(self, flavor: str, rows: int, cols: int) -> str:
        return self.kernels[shape_key(flavor, rows, cols)]


def shape_key(flavor: str, rows: int, cols: int) -> str:
    return f"{flavor}:{rows}x{cols}"


def fixed(samples: Mapping[tuple[str, int, int], np.ndarray], kernel: str) -> Selection:
    """Every shape uses the family the caller named."""
    if kernel not in FAMILIES:
        raise EngineError(f"unknown kernel family {kernel!r}; choose one of {', '.join(FAMILIES)}")
    return Selection(mode=kernel, kernels={shape_key(*key): kernel for key in samples})


def per_shape(
    samples: Mapping[tuple[str, int, int], np.ndarray], families: Mapping[tuple[int, int], str]
) -> Selection:
    """The family given for each (rows, cols): a recorded choice applied again (a receipt's replay)."""
    kernels = {}
    for flavor, rows, cols in samples:
        family = families.get((rows, cols))
        if family not in FAMILIES:
            raise EngineError(f"no kernel family given for the {rows}x{cols} matrices (got {family!r})")
        kernels[shape_key(flavor, rows, cols)] = family
    return Selection(mode="per-shape", kernels=kernels)


def choose(
    samples: Mapping[tuple[str, int, int], np.ndarray], cache_dir: Path | None = None, retune: bool = False
) -> Selection:
    """Time every family on one raw matrix per (flavor, rows, cols), reusing this machine's cached verdicts
    unless `retune` (which also has the AVX2 prefetch distances measured again); verdicts that passed the
    noise check are cached."""
    start = time.perf_counter()
    path = (cache_dir or default_cache_dir()) / CACHE_FILE
    store = _read_cache(path)
    key_parts = cache_key()
    key = machine_key()
    if retune:
        _forget_prefetch(key, cache_dir)
    known = store.get(key, {}) if isinstance(store.get(key), dict) else {}
    sel = Selection(mode="auto", kernels={}, retuned=retune, cache_path=str(path), cache_key=key_parts)
    changed = False
    for flavor, rows, cols in samples:
        skey = shape_key(flavor, rows, cols)
        timing = None if retune else _cached_timing(known.get(skey))
        sel.cached[skey] = timing is not None
        if timing is None:
            timing = time_families(flavor, samples[(flavor, rows, cols)], rows, cols)
            if not timing.noisy:
                known[skey] = timing.as_dict()
                changed = True
        sel.kernels[skey] = timing.choice
        sel.shapes[skey] = timing
    if changed:
        store[key] = known
        if not _write_cache(path, store):
            sel.cache_path = None
    sel.seconds = time.perf_counter() - start
    return sel


def _cached_timing(entry: object) -> ShapeTiming | None:
    """A cached verdict written by this version of the module, or None (then the shape is timed)."""
    if not isinstance(entry, dict) or entry.get("choice") not in FAMILIES:
        return None
    try:
        return ShapeTiming.from_dict(entry)
    except (KeyError, TypeError, ValueError):
        return None


def time_families(flavor: str, raw: np.ndarray, rows: int, cols: int) -> ShapeTiming:
    """Interleaved rounds of every family that can hold this matrix, then the verdict (module docstring)."""
    from engine.kernels import matvec, prepare_matrix

    rng = np.random.default_rng(0)
    q = rng.integers(-127, 128, cols, dtype=np.int8)
    out = np.zeros(rows, np.float32)
    scratch = Trace().counts  # timing runs stay out of the model's trace
    mats, errors = {}, {}
    for fam in FAMILIES:
        try:
            mats[fam] = prepare_matrix(flavor, raw, rows, cols, fam)
        except EngineError as exc:
            errors[fam] = f"unsupported: {exc}"
    if not mats:
        raise EngineError(f"no kernel family can run a {flavor} {rows}x{cols} matrix: {errors}")
    single = {}
    for fam, m in mats.items():
        matvec(m, q, 1.0, out, scratch)  # compiles or loads the kernel
        t0 = time.perf_counter()
        matvec(m, q, 1.0, out, scratch)
        single[fam] = max(time.perf_counter() - t0, 1e-7)
    calls = int(min(MAX_BATCH_CALLS, max(1, np.ceil(BATCH_SECONDS / min(single.values())))))
    names = list(mats)
    for _attempt in range(ATTEMPTS):
        rounds: dict[str, list[float]] = {fam: [] for fam in names}
        for r in range(ROUNDS):
            for fam in names[r % len(names) :] + names[: r % len(names)]:
                m = mats[fam]
                t0 = time.perf_counter()
                for _ in range(calls):
                    matvec(m, q, 1.0, out, scratch)
                rounds[fam].append((time.perf_counter() - t0) / calls)
        timing = _verdict(rounds, errors, calls)
        if not timing.noisy:
            break
    return timing


def _verdict(rounds: dict[str, list[float]], errors: dict[str, str], calls: int) -> ShapeTiming:
    """The default family unless another wins every round by MIN_GAIN in the median; noisy rounds keep it."""
    timing = ShapeTiming(DEFAULT_FAMILY, "", False, rounds, errors, calls)
    fallback = DEFAULT_FAMILY if DEFAULT_FAMILY in rounds else min(rounds, key=lambda f: timing.median[f])
    spread = timing.spread
    worst = max(spread, key=lambda f: spread[f])
    if spread[worst] > MAX_SPREAD:
        timing.choice, timing.noisy = fallback, True
        timing.reason = (
            f"timings too noisy ({worst} rounds spread {spread[worst]:.0%} > {MAX_SPREAD:.0%}, "
            f"{ATTEMPTS} attempts): kept {fallback}, not cached"
        )
        return timing
    median = timing.median
    best = min(median, key=lambda f: (median[f], FAMILIES.index(f)))
    if best == fallback:
        timing.choice, timing.reason = best, "fastest in the median round"
        return timing
    ratios = [b / d for b, d in zip(rounds[best], rounds[fallback], strict=True)]
    gain = 1.0 - median[best] / median[fallback]
    if all(x < 1.0 for x in ratios) and gain >= MIN_GAIN:
        timing.choice = best
        timing.reason = f"faster than {fallback} in all {len(ratios)} rounds, by {gain:.0%} in the median"
    else:
        wins = sum(x < 1.0 for x in ratios)
        timing.choice = fallback
        timing.reason = (
            f"{best} ahead by {gain:.0%} in the median and in {wins} of {len(ratios)} rounds: within noise "
            f"(needs every round and {MIN_GAIN:.0%}), kept {fallback}"
        )
    return timing


def default_cache_dir() -> Path:
    """$BITNET_HARNESS_CACHE, else ~/.cache/bitnet-harness."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "bitnet-harness"


@lru_cache(maxsize=1)
def engine_version() -> str:
    """The distribution's version and a digest of what a timing verdict depends on in the engine: every
    kernel module and this one (the timing method). Fixed for a process, so read once."""
    try:
        dist = version("bitnet-harness")
    except PackageNotFoundError:
        dist = "0+unknown"
    kernels_dir = Path(__file__).parent / "kernels"
    src = hashlib.sha256()
    for f in [Path(__file__), *sorted(kernels_dir.glob("*.py"))]:
        src.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"{dist}+{src.hexdigest()[:16]}"


def cache_key() -> dict[str, object]:
    """What a cached verdict is valid for: the CPU, the thread count, numba and the engine."""
    model, flags = _cpu_identity()
    return {
        "cpu": model,
        "flags": hashlib.sha256(flags.encode()).hexdigest()[:16],
        "threads": numba.get_num_threads(),
        "numba": numba.__version__,
        "engine": engine_version(),
    }


def machine_key() -> str:
    """cache_key() as the one string that names a machine's entry in a cache file."""
    return " | ".join(f"{k} {v}" for k, v in cache_key().items())


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
PREFETCH_TOLERANCE = 0.03
PREFETCH_AGREEMENT = 0.10  # two prefetch measurements whose best GB/s differ more are not cached


@dataclass
class PrefetchChoice:
    """The software prefetch distance (bytes ahead) the AVX2 kernels of one kind run with on rows of one
    width on this host, with the evidence; `plan` is the array those kernels read it from."""

    kind: str  # "matrix" (the ternary GEMVs) or "logits" (the int8 logits)
    cols: int  # row width in values
    distance: int
    timings: dict[str, float]  # distance -> best GB/s
    threads: int
    cached: bool = False
    seconds: float = 0.0
    plan: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.plan = np.array([self.distance], np.int64)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "cols": self.cols,
            "bytes": self.distance,
            "timings_gb_per_s": dict(self.timings),
            "cached": self.cached,
            "seconds": self.seconds,
        }


# (machine key, kind, cols) -> its choice, measured or read in this process; the kernels prepared under a
# key hold its plan array
_prefetch: dict[tuple[str, str, int], PrefetchChoice] = {}


def fastest_distance(gbps: Mapping[str, float]) -> int:
    """The prefetch distance chosen from its timings (distance -> GB/s): the shortest within
    PREFETCH_TOLERANCE of the fastest, so noise never buys a longer one."""
    top = max(gbps.values())
    return min(int(d) for d, v in gbps.items() if v >= top * (1 - PREFETCH_TOLERANCE))


def _steady(first: Mapping[int, float], second: Mapping[int, float]) -> bool:
    """Two measurements of the same distances agree: their best GB/s within PREFETCH_AGREEMENT. A slow spell
    of a shared host during one of them would otherwise pick distances from slowed timings for good."""
    a, b = max(first.values()), max(second.values())
    return a > 0 and b > 0 and abs(a / b - 1) <= PREFETCH_AGREEMENT


def prefetch_choice(kind: str, cols: int, cache_dir: Path | None = None) -> PrefetchChoice:
    """The prefetch distance of the AVX2 `kind` kernels ("matrix" or "logits") on rows of `cols` values.

    Measured twice per machine key (CPU, flags, numba, threads, kernel source) and row width by
    `avx2.time_prefetch`, the best of both kept, and cached beside the family verdicts only when the two
    agree (a disagreement is measured again by the next process); later calls in the process return the
    same choice and plan array.
    """
    target = (machine_key(), kind, cols)
    if target not in _prefetch:
        _prefetch[target] = _measure_or_read_prefetch(*target, cache_dir)
    return _prefetch[target]


def prefetch_kind(kernel_id: str) -> str:
    """The prefetch choice kind an AVX2 kernel id runs with: the logits' own, or the matrices'."""
    return "logits" if kernel_id == "logits_i8" else "matrix"


def prefetch_record(choices: Iterable[PrefetchChoice]) -> dict[str, object] | None:
    """The receipt's record of the prefetch choices some kernels run with (None for none): each distance
    with the timings behind it."""
    chosen = sorted({(c.kind, c.cols): c for c in choices}.values(), key=lambda c: (c.kind, c.cols))
    if not chosen:
        return None
    return {
        "threads": chosen[0].threads,
        "cached": all(c.cached for c in chosen),
        "seconds": sum(c.seconds for c in chosen),
        "targets": [c.as_dict() for c in chosen],
    }


def _forget_prefetch(key: str, cache_dir: Path | None) -> None:
    """Drop this machine key's prefetch distances, in the process and in the cache: the next AVX2 kernel
    prepared measures them again."""
    for target in [t for t in _prefetch if t[0] == key]:
        del _prefetch[target]
    path = (cache_dir or default_cache_dir()) / PREFETCH_FILE
    store = _read_cache(path)
    if store.pop(key, None) is not None:
        _write_cache(path, store)


def _measure_or_read_prefetch(key: str, kind: str, cols: int, cache_dir: Path | None) -> PrefetchChoice:
    from engine.kernels import avx2

    start = time.perf_counter()
    path = (cache_dir or default_cache_dir()) / PREFETCH_FILE
    store = _read_cache(path)
    known = store.get(key) if isinstance(store.get(key), dict) else {}
    entry = known.get(f"{kind} {cols}")
    valid = isinstance(entry, dict) and entry and all(isinstance(v, float) for v in entry.values())
    if valid:
        timings = dict(entry)
    else:
        first, second = avx2.time_prefetch(kind, cols), avx2.time_prefetch(kind, cols)
        timings = {str(d): max(first[d], second[d]) for d in first}
        if _steady(first, second):
            store[key] = {**known, f"{kind} {cols}": timings}
            _write_cache(path, store)
    return PrefetchChoice(
        kind=kind,
        cols=cols,
        distance=fastest_distance(timings),
        timings=timings,
        threads=numba.get_num_threads(),
        cached=bool(valid),
        seconds=time.perf_counter() - start,
    )
