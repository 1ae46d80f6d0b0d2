"""Everything a benchmark run is asked to do, checked completely before any work starts.

`BenchmarkRequest` holds every option of `benchmark`; `validate()` finds every conflict between them and every
bad value (an unreadable signing key, llama.cpp not installed, a selector naming no archived receipt, an
archive URL no installed filesystem reads) and returns the `BenchmarkPlan` the session runs, so nothing is
written or measured for a run that would be refused.

A sweep is a request whose axes (SWEEP_AXES: model, format, kernel, threads, prompt tokens, tokens) hold
tuples of values, as llama-bench's `-p 128,512 -n 32,128 -t 1,2`: `combinations()` expands it into one
single-run request per combination, and `plans()` validates every one of them before the first runs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numba
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from engine.constants import ARCH_BITNET, ARCH_BITNET_B158
from engine.generate import SamplingParams
from engine.model import KERNEL_MODES
from harness.comparison.archive import resolve
from harness.comparison.stats import THRESHOLD
from harness.comparison.store import open_store
from harness.errors import HarnessError
from harness.peers.llama_cpp import llama_cpp_missing
from harness.receipts.signing import load_private_key
from harness.session.ab import Side, parse_sides
from harness.session.model import check_retune

# The axes a sweep varies, outermost first: a combination's model file and kernels stay loaded while the
# inner axes change (threads are set per run), so consecutive runs share them.
SWEEP_AXES = ("model", "fmt", "kernel", "threads", "prompt_tokens", "tokens")
OPTION_NAMES = {
    "model": "--model",
    "fmt": "--format",
    "kernel": "--kernel",
    "threads": "--threads",
    "prompt_tokens": "--prompt-tokens",
    "tokens": "--tokens",
}


@dataclass(frozen=True)
class BenchmarkRequest:
    """The options of one `benchmark` call (the command's names; `threshold` is a fraction, not percent).
    A sweep axis (SWEEP_AXES) may hold a tuple of values: one run per combination."""

    model: Path | None | tuple[Path, ...] = None
    preset: str = "2b-4t"
    fmt: str | tuple[str, ...] = "i2s"
    arch: str | None = None  # default: bitnet-b1.58, or bitnet with vs_llama_cpp (the one llama.cpp runs)
    model_seed: int = 0
    tokens: int | tuple[int, ...] = 128
    prompt: str | None = None
    prompt_tokens: int | None | tuple[int, ...] = 32
    repetitions: int = 5
    warmup: int = 1
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    threads: int | None | tuple[int, ...] = None
    kernel: str | tuple[str, ...] = "auto"
    retune: bool = False
    probe_phase: bool = True
    timing_phase: bool = True
    timing_steps: int = 3
    bandwidth: bool = True
    receipts_dir: Path = Path("receipts")
    archive: str | None = None  # a shared archive (folder or fsspec URL): --compare-to resolves there, and
    # the verified receipt is added to it
    strict_loader: bool = False
    compare_to: str | None = None
    ab_kernel: str | None = None
    ab_threads: str | None = None
    threshold: float = THRESHOLD
    vs_llama_cpp: bool = False
    sign_key: Path | None = None

    def combinations(self) -> list[BenchmarkRequest]:
        """One single-run request per combination of the swept axes, in run order (the last axis fastest)."""
        values = [v if isinstance(v, tuple) else (v,) for v in (getattr(self, a) for a in SWEEP_AXES)]
        return [
            replace(self, **dict(zip(SWEEP_AXES, combo, strict=True))) for combo in itertools.product(*values)
        ]

    def plans(self) -> list[BenchmarkPlan]:
        """The validated plan of every combination, in run order; a sweep is refused whole before any work."""
        _check_axes(self)
        combos = self.combinations()
        if len(combos) > 1:
            _check_sweep(self)
        validated = [c.validate() for c in combos]
        used = [k for p in validated for k in ([s.kernel for s in p.pair] if p.pair else [p.request.kernel])]
        check_retune(self.retune, used)  # a sweep may retune while some of its combinations use auto
        return validated

    def validate(self) -> BenchmarkPlan:
        """The plan this request asks for; HarnessError (or EngineError) naming the first problem found."""
        if any(isinstance(getattr(self, a), tuple) for a in SWEEP_AXES):
            raise ValueError("validate() takes a single run; plans() validates every combination of a sweep")
        signing_key = (
            None if self.sign_key is None else load_private_key(self.sign_key)
        )  # fails now, not after
        _check_counts(self)
        if self.kernel not in KERNEL_MODES:
            raise HarnessError(
                f"--kernel: unknown kernel {self.kernel!r}; choose from {', '.join(KERNEL_MODES)}"
            )
        params = SamplingParams(self.temperature, self.top_k, self.top_p, self.seed)
        pair = parse_sides(self.ab_kernel, self.ab_threads, self.kernel, self.threads)
        if pair is not None and self.compare_to is not None:
            raise HarnessError("--compare-to and --ab-kernel/--ab-threads are separate modes; give one")
        if self.vs_llama_cpp:
            _check_vs_llama_cpp(pair, params)
        if (pair is not None or self.compare_to is not None) and not 0 < self.threshold < 1:
            raise HarnessError(f"--threshold must be a fraction in (0, 1) (got {self.threshold})")
        base = None
        if self.archive is not None:
            open_store(self.archive)  # a URL no installed filesystem reads fails now, not after the run
        if self.compare_to is not None:
            chosen = resolve(self.compare_to, self.archive if self.archive is not None else self.receipts_dir)
            base = BaseReceipt(chosen.location, chosen.receipt)
        if pair is not None and signing_key is not None:
            raise HarnessError(
                "--sign-key signs a single run's receipt; drop it for --ab-kernel/--ab-threads"
            )
        if self.model is not None and not self.model.is_file():
            raise HarnessError(f"model file {self.model} does not exist or is not a file")
        arch = self.arch or (ARCH_BITNET if self.vs_llama_cpp else ARCH_BITNET_B158)
        return BenchmarkPlan(self, params, arch, pair, base, signing_key)


@dataclass(frozen=True)
class BaseReceipt:
    """The archived receipt `--compare-to` named, resolved and read before the run."""

    location: str
    receipt: dict[str, Any]


@dataclass(frozen=True)
class BenchmarkPlan:
    """A validated request with what validation resolved: sampling, architecture, A/B sides, base receipt."""

    request: BenchmarkRequest
    params: SamplingParams
    arch: str
    pair: tuple[Side, Side] | None
    base: BaseReceipt | None
    signing_key: Ed25519PrivateKey | None = None


def _check_axes(r: BenchmarkRequest) -> None:
    """Each swept axis lists at least one value, none of them twice."""
    for axis in SWEEP_AXES:
        values = getattr(r, axis)
        if not isinstance(values, tuple):
            continue
        if not values:
            raise HarnessError(f"{OPTION_NAMES[axis]} lists no value")
        twice = sorted({str(v) for v in values if values.count(v) > 1})
        if twice:
            raise HarnessError(f"{OPTION_NAMES[axis]} lists {', '.join(twice)} more than once")


def _check_sweep(r: BenchmarkRequest) -> None:
    """What a sweep (several combinations) cannot be combined with."""
    for option, given in (
        ("--compare-to", r.compare_to is not None),
        ("--ab-kernel/--ab-threads", r.ab_kernel is not None or r.ab_threads is not None),
        ("--vs-llama-cpp", r.vs_llama_cpp),
    ):
        if given:
            raise HarnessError(
                f"{option} runs one configuration; a sweep (comma lists) writes a receipt per combination: "
                "give single values, or compare the sweep's receipts afterwards"
            )
    if isinstance(r.fmt, tuple) and len(r.fmt) > 1 and r.model is not None:
        raise HarnessError("--format chooses the preset model's format; with --model, list the files instead")


def _check_counts(r: BenchmarkRequest) -> None:
    for option, value, least in (
        ("--tokens", r.tokens, 1),
        ("--repetitions", r.repetitions, 1),
        ("--warmup", r.warmup, 0),
        ("--timing-steps", r.timing_steps, 1),
        ("--model-seed", r.model_seed, 0),
    ):
        if value < least:
            raise HarnessError(f"{option} must be >= {least} (got {value})")
    if r.prompt_tokens is not None and r.prompt_tokens < 1:
        raise HarnessError(f"--prompt-tokens must be >= 1 (got {r.prompt_tokens})")
    limit = numba.config.NUMBA_NUM_THREADS
    if r.threads is not None and not 1 <= r.threads <= limit:
        raise HarnessError(f"--threads must be between 1 and {limit} (got {r.threads})")


def _check_vs_llama_cpp(pair: tuple[Side, Side] | None, params: SamplingParams) -> None:
    if pair is not None:
        raise HarnessError("--vs-llama-cpp and --ab-kernel/--ab-threads are separate modes; give one")
    if params.temperature != 0:
        raise HarnessError("--vs-llama-cpp compares greedy decoding; drop --temperature")
    reason = llama_cpp_missing()
    if reason is not None:
        raise HarnessError(f"--vs-llama-cpp: {reason}")
