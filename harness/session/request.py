"""Everything a benchmark run is asked to do, checked completely before any work starts.

`BenchmarkRequest` holds every option of `benchmark`; `validate()` finds every conflict between them and every
bad value (a missing signing key, llama.cpp not installed, a selector naming no archived receipt, an archive
URL no installed filesystem reads) and returns
the `BenchmarkPlan` the session runs, so nothing is written or measured for a run that would be refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.constants import ARCH_BITNET, ARCH_BITNET_B158
from engine.generate import SamplingParams
from engine.model import KERNEL_MODES
from harness.comparison.archive import resolve
from harness.comparison.stats import THRESHOLD
from harness.comparison.store import open_store
from harness.errors import HarnessError
from harness.peers.llama_cpp import llama_cpp_missing
from harness.receipts.signing import key_from_env
from harness.session.ab import Side, parse_sides


@dataclass(frozen=True)
class BenchmarkRequest:
    """The options of one `benchmark` call (the command's names; `threshold` is a fraction, not percent)."""

    model: Path | None = None
    preset: str = "2b-4t"
    fmt: str = "i2s"
    arch: str | None = None  # default: bitnet-b1.58, or bitnet with vs_llama_cpp (the one llama.cpp runs)
    model_seed: int = 0
    tokens: int = 128
    prompt: str | None = None
    prompt_tokens: int | None = 32
    repetitions: int = 3
    warmup: int = 1
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    threads: int | None = None
    kernel: str = "auto"
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
    sign: bool = False
    key_env: str | None = None

    def validate(self) -> BenchmarkPlan:
        """The plan this request asks for; HarnessError (or EngineError) naming the first problem found."""
        if self.sign and self.key_env is None:
            raise HarnessError("--sign needs --key-env NAME, the environment variable that holds the key")
        if self.sign:
            key_from_env(self.key_env or "")  # a missing key fails now, not after the run
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
        if pair is not None and self.sign:
            raise HarnessError("--sign signs a single run's receipt; drop it for --ab-kernel/--ab-threads")
        if self.model is not None and not self.model.is_file():
            raise HarnessError(f"model file {self.model} does not exist or is not a file")
        arch = self.arch or (ARCH_BITNET if self.vs_llama_cpp else ARCH_BITNET_B158)
        return BenchmarkPlan(self, params, arch, pair, base)


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


def _check_vs_llama_cpp(pair: tuple[Side, Side] | None, params: SamplingParams) -> None:
    if pair is not None:
        raise HarnessError("--vs-llama-cpp and --ab-kernel/--ab-threads are separate modes; give one")
    if params.temperature != 0:
        raise HarnessError("--vs-llama-cpp compares greedy decoding; drop --temperature")
    reason = llama_cpp_missing()
    if reason is not None:
        raise HarnessError(f"--vs-llama-cpp: {reason}")
