"""One benchmark run from a validated request to its outcome: receipts written, verified, signed, compared.

Modes: a plain run (probe, timing, benchmark phases, one receipt); a sweep (a plain run per combination of
the request's lists, each with its own receipt); `vs_llama_cpp` (llama.cpp's rounds interleaved with the
engine's, its figures in the receipt's `peer`); an A/B run (two configurations interleaved, a receipt each, B
compared against A); `compare_to` (the new receipt compared against an archived one); `sign_key` (a signed
in-toto attestation beside the receipt); `archive` (the verified receipt added to a shared archive, a folder
or an object store, where `compare_to` also resolves). Nothing here prints: progress goes to the caller's
`Progress`, and the outcome says what to show and which exit code the run earns.

A sweep runs its combinations one after the other, each complete (warm-up, then its measured repetitions),
in the order of `BenchmarkRequest.combinations()`. A loaded model serves the following combinations while
that is exact: the same file, kernel mode and strictness (and, for `--kernel auto`, whose choice is timed on
the thread count, the same threads); the thread count is set before each run. The model file is hashed once.
The bandwidth probe after one combination is the probe before the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import pandas as pd

from engine.model import Model, set_threads
from engine.strict import resolve_strict
from harness.comparison.archive import add_bytes
from harness.comparison.compare import Comparison, compare
from harness.comparison.runs import run_row, runs_frame, verdict
from harness.machine import noise
from harness.machine.bandwidth import Floor, Probe, probe_in_child
from harness.peers.llama_cpp import reference_file
from harness.peers.vs_llama_cpp import LlamaCppRunner, peer_section
from harness.phases.benchmark import run_benchmark
from harness.phases.load import LoadedModel
from harness.phases.probe import run_probe
from harness.phases.timing import run_timing
from harness.phases.workload import DEFAULT_PROMPT, ModelSource, prompt_ids
from harness.progress import SILENT, Progress
from harness.receipts.build import build_receipt, model_section
from harness.receipts.checks import Evidence, ModelFacts
from harness.receipts.digest import FileDigest, file_digest
from harness.receipts.files import MAX_RECEIPT_BYTES, read_regular_file, utc_timestamp, write_receipt
from harness.receipts.signing import sign_receipt_file
from harness.receipts.verify import VerificationResult, verify
from harness.runtime import interrupts
from harness.session import ab
from harness.session.model import model_source, ready_model
from harness.session.request import BenchmarkPlan, BenchmarkRequest


@dataclass(frozen=True)
class WrittenReceipt:
    """A receipt the run wrote: where, its verification, its signature envelope, the A/B side it measured,
    and where the shared archive holds it (None without --archive or when it failed verification)."""

    receipt: dict[str, Any]
    path: Path
    verification: VerificationResult
    signature: Path | None = None
    side: ab.Side | None = None
    archived: str | None = None


@dataclass(frozen=True)
class BenchmarkOutcome:
    """What a run produced. Exit code: compare's when a comparison ran, else 0 verified / 1 not."""

    receipts: tuple[WrittenReceipt, ...]
    comparison: Comparison | None = None

    @property
    def ab(self) -> bool:
        return any(r.side is not None for r in self.receipts)

    @property
    def exit_code(self) -> int:
        if self.comparison is not None:
            return self.comparison.exit_code
        return 0 if all(r.verification.ok for r in self.receipts) else 1

    def summary(self) -> pd.DataFrame:
        """The summary table: one row per receipt written, in run order (harness.comparison.runs)."""
        return runs_frame([run_row(w.receipt, w.path, verdict(w.verification)) for w in self.receipts])


def run_benchmark_session(request: BenchmarkRequest, progress: Progress = SILENT) -> BenchmarkOutcome:
    """Validate the request (every combination of a sweep), then run it; every refusal comes before the first
    model byte is written."""
    plans = request.plans()
    started_at = utc_timestamp()
    models = _Models(progress)
    first = plans[0]
    source = models.source(first)
    _activate_threads(first.request.threads)
    before = None
    if request.bandwidth:
        with progress.status("measuring read bandwidth (a child process)"):
            before = probe_in_child(numba.get_num_threads())
    if first.pair is not None:  # an A/B run is never a sweep
        return _ab_run(first, source, models, started_at, before, progress)
    written: list[WrittenReceipt] = []
    comparison = None
    for i, plan in enumerate(plans):
        if len(plans) > 1:
            progress.note(f"sweep run {i + 1} of {len(plans)}: {_describe(plan.request)}")
        if i > 0:
            started_at, source = utc_timestamp(), models.source(plan)
            _activate_threads(plan.request.threads)
        one, comparison, before = _single_run(plan, source, models, started_at, before, progress)
        written.append(one)
    return BenchmarkOutcome(tuple(written), comparison)


def _activate_threads(threads: int | None) -> None:
    """This run's thread count (None: all of numba's), whatever an earlier run of a sweep set."""
    set_threads(threads if threads is not None else numba.config.NUMBA_NUM_THREADS)


def _describe(r: BenchmarkRequest) -> str:
    model = str(r.model) if r.model is not None else f"{r.preset} {r.fmt}"
    threads = r.threads or numba.config.NUMBA_NUM_THREADS
    prompt = f"{r.prompt_tokens} prompt tokens" if r.prompt_tokens is not None else "the whole prompt"
    return f"{model}, --kernel {r.kernel}, {threads} threads, {prompt}, {r.tokens} tokens"


class _Models:
    """The model files and loaded models of a session: each file written (presets) and hashed once, and the
    loaded model kept while the next run can share it exactly (see the module docstring)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._sources: dict[tuple[Any, ...], ModelSource] = {}
        self._identity: dict[Path, tuple[FileDigest, dict[str, Any]]] = {}
        self._loaded: tuple[tuple[Any, ...], LoadedModel] | None = None
        self.load_started_at = utc_timestamp()  # when the loaded model began loading

    def source(self, plan: BenchmarkPlan) -> ModelSource:
        """The run's model file: the user's, or the preset written once (llama.cpp's copy with the peer)."""
        r = plan.request
        key = (r.model, r.preset, r.fmt, plan.arch, r.model_seed, r.vs_llama_cpp)
        if key not in self._sources:
            source = model_source(r.model, r.preset, r.fmt, plan.arch, r.model_seed, self.progress)
            self._sources[key] = _llama_cpp_file(source, self.progress) if r.vs_llama_cpp else source
        return self._sources[key]

    def loaded(
        self, source: ModelSource, kernel: str, threads: int | None, strict: bool | None, retune: bool
    ) -> LoadedModel:
        """The model loaded with its kernels ready: the previous run's when it is the same, else a new one."""
        key = (source.path, kernel, strict, threads if kernel == "auto" else None)
        if self._loaded is not None and self._loaded[0] == key:
            self.progress.note("the model and its kernels stay loaded from the previous run")
            return self._loaded[1]
        self._loaded = None  # released before the next one is loaded
        self.load_started_at = utc_timestamp()
        loaded = ready_model(source, kernel, threads, strict, self.progress, retune)
        self._loaded = (key, loaded)
        return loaded

    def identity(self, source: ModelSource, model: Model) -> tuple[FileDigest, dict[str, Any]]:
        """The file's digest (hashed once per session) and the receipt's `model` section."""
        if source.path not in self._identity:
            digest = file_digest(source.path)
            self._identity[source.path] = (digest, model_section(model.file, str(source.path), digest))
        return self._identity[source.path]


class _Run:
    """What both kinds of run share: the workload, the model's identity hashed once, receipts written once."""

    def __init__(
        self, plan: BenchmarkPlan, source: ModelSource, started_at: str, first: Model, models: _Models
    ) -> None:
        r = plan.request
        self.plan, self.source, self.started_at = plan, source, started_at
        self.prompt_text = r.prompt or DEFAULT_PROMPT
        self.ids = prompt_ids(first.tokenizer, self.prompt_text, r.prompt_tokens)
        self.digest, self.facts = models.identity(source, first)

    def write(
        self,
        loaded: LoadedModel,
        phases: dict[str, Any],
        output: list[int],
        floor: Floor | None,
        usage: noise.SystemUsage,
        peer: dict[str, Any] | None = None,
        side: ab.Side | None = None,
    ) -> WrittenReceipt:
        """Build, verify (schema once, the model's digest from this run), write and maybe sign one receipt."""
        r = self.plan.request
        receipt = build_receipt(
            started_at=self.started_at,
            model=loaded.model,
            model_section=dict(self.facts),
            phases=phases,
            prompt_text=self.prompt_text,
            prompt=self.ids,
            params=self.plan.params,
            tokens_requested=r.tokens,
            output_tokens=output,
            strict=resolve_strict(_strict(r)),
            jit_seconds=loaded.jit_seconds,
            floor=floor,
            usage=usage,
            peer=peer,
        )
        facts = ModelFacts(str(self.source.path), dict(self.facts), loaded.model.weight_bytes_per_token)
        result = verify(receipt, Evidence(model=facts))
        path = write_receipt(receipt, r.receipts_dir, schema_checked=result.schema_ok)
        key = self.plan.signing_key
        envelope = sign_receipt_file(path, key) if key is not None else None
        archived = None
        if r.archive is not None and result.ok:
            data = read_regular_file(path, MAX_RECEIPT_BYTES)
            archived, _ = add_bytes(data, receipt, r.archive, str(path), verified=result)
        return WrittenReceipt(receipt, path, result, envelope, side, archived)


def _strict(request: BenchmarkRequest) -> bool | None:
    return True if request.strict_loader else None


def _single_run(
    plan: BenchmarkPlan,
    source: ModelSource,
    models: _Models,
    started_at: str,
    before: Probe | None,
    progress: Progress,
) -> tuple[WrittenReceipt, Comparison | None, Probe | None]:
    """One run's receipt, its comparison with --compare-to, and the bandwidth probe taken after it."""
    r = plan.request
    loaded = models.loaded(source, r.kernel, r.threads, _strict(r), r.retune)
    # a receipt reports its model's load and JIT time, so it starts no later than that load (sweeps share one)
    started_at = min(started_at, models.load_started_at)
    run = _Run(plan, source, started_at, loaded.model, models)
    runner = None
    if r.vs_llama_cpp:
        with progress.status(f"loading {source.path} into llama.cpp"):
            threads = r.threads or numba.config.NUMBA_NUM_THREADS
            runner = LlamaCppRunner(source.path, len(run.ids) + r.tokens + 1, threads)
    start = noise.snapshot()
    phases, output, peer = _phases(plan, loaded.model, run.ids, runner, run.digest.sha256, progress)
    usage = noise.usage_between(start, noise.snapshot())
    floor = _bandwidth_again(before, progress)
    written = run.write(loaded, phases, output, floor, usage, peer)
    comparison = None
    if plan.base is not None:
        comparison = compare(
            plan.base.receipt,
            written.receipt,
            base_label=plan.base.location,
            new_label=str(written.path),
            threshold=r.threshold,
            verified=(None, written.verification),
        )
    return written, comparison, floor.probes[-1] if floor is not None else None


def _phases(
    plan: BenchmarkPlan,
    model: Model,
    ids: list[int],
    runner: LlamaCppRunner | None,
    model_sha256: str,
    progress: Progress,
) -> tuple[dict[str, Any], list[int], dict[str, Any] | None]:
    """Phases 1-3 (the receipt's `phases`), the first measured repetition's tokens, and the peer section."""
    r = plan.request
    phases: dict[str, Any] = {}
    peer = None
    with progress.tasks() as board:
        if r.probe_phase:
            task = board.add_task("phase 1: probe", total=None)
            phases["probe"] = run_probe(model, lambda what: board.update(task, description=f"probe: {what}"))
            board.update(task, total=1, completed=1, description="phase 1: probe")
            interrupts.raise_if_swallowed()  # the probe loads the other kernel families
        if r.timing_phase:
            task = board.add_task("phase 2: timing", total=1)
            phases["timing"] = run_timing(model, ids, r.timing_steps, plan.params)
            board.update(task, completed=1)
        if runner is None:
            task = board.add_task("phase 3: benchmark", total=r.warmup + r.repetitions)
            phases["benchmark"], output = run_benchmark(
                model,
                ids,
                r.tokens,
                r.repetitions,
                r.warmup,
                plan.params,
                lambda done, _t: board.update(task, completed=done),
            )
            return phases, output, None
        task = board.add_task("phase 3: benchmark, rounds engine then llama.cpp", total=None)
        engine_side = ab.Side("engine", r.kernel, r.threads)
        (phases["benchmark"], output), (peer_bench, _) = ab.interleave(
            [
                ab.engine_generation(engine_side, model, ids, r.tokens, plan.params),
                lambda _first: runner.generation(ids, r.tokens),
            ],
            r.repetitions,
            r.warmup,
            lambda done, total: board.update(task, completed=done, total=total),
        )
        peer = peer_section(runner, model_sha256, phases["benchmark"], peer_bench)
    return phases, output, peer


def _ab_run(
    plan: BenchmarkPlan,
    source: ModelSource,
    models: _Models,
    started_at: str,
    before: Probe | None,
    progress: Progress,
) -> BenchmarkOutcome:
    """Load each side once, run the interleaved rounds, write and verify a receipt each, compare B with A."""
    r = plan.request
    assert plan.pair is not None
    loaded = []
    for side in plan.pair:
        progress.note(f"side {side.describe()}")
        loaded.append(ready_model(source, side.kernel, side.threads, _strict(r), progress, r.retune))
    run = _Run(plan, source, started_at, loaded[0].model, models)
    progress.note("A/B: phases 1 and 2 are not run; rounds alternate A B, each side on its own loaded model")
    start = noise.snapshot()
    with progress.tasks() as board:
        task = board.add_task("A/B rounds", total=2 * (r.warmup + r.repetitions))
        results = ab.interleave(
            [
                ab.engine_generation(side, one.model, run.ids, r.tokens, plan.params)
                for side, one in zip(plan.pair, loaded, strict=True)
            ],
            r.repetitions,
            r.warmup,
            lambda done, _t: board.update(task, completed=done),
        )
    usage = noise.usage_between(start, noise.snapshot())
    floor = _bandwidth_again(before, progress)
    written = []
    for side, one, (section, output) in zip(plan.pair, loaded, results, strict=True):
        side.activate()  # the receipt records the thread count this side ran with
        written.append(run.write(one, {"benchmark": section}, output, floor, usage, side=side))
    (side_a, side_b), (a, b) = plan.pair, written
    comparison = compare(
        a.receipt,
        b.receipt,
        base_label=f"A ({side_a.describe()[3:]}) {a.path}",
        new_label=f"B ({side_b.describe()[3:]}) {b.path}",
        threshold=r.threshold,
        ignore=("threads",) if side_a.threads != side_b.threads else (),
        same_process=True,
        verified=(a.verification, b.verification),
    )
    return BenchmarkOutcome(tuple(written), comparison)


def _bandwidth_again(before: Probe | None, progress: Progress) -> Floor | None:
    """The probes before and after the measured phases (same threads as the first): their passes pooled make
    the floor, and a disagreement between them marks the run noisy (harness.machine.bandwidth)."""
    if before is None:
        return None
    with progress.status("measuring read bandwidth again (a child process)"):
        return Floor((before, probe_in_child(before.threads)))


def _llama_cpp_file(source: ModelSource, progress: Progress) -> ModelSource:
    """The file both engines run: the model itself or its llama.cpp-readable copy beside it."""
    with progress.status(f"checking that llama.cpp reads {source.path} as the engine does"):
        ref = reference_file(source.path)
    for change in ref.changes:
        progress.note(f"llama.cpp copy {ref.path}: {change}")
    return ModelSource(ref.path, source.preset, source.fmt, source.arch, source.seed)
