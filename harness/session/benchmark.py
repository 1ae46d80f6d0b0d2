"""One benchmark run from a validated request to its outcome: receipts written, verified, signed, compared.

Modes: a plain run (probe, timing, benchmark phases, one receipt); `vs_llama_cpp` (llama.cpp's rounds
interleaved with the engine's, its figures in the receipt's `peer`); an A/B run (two configurations
interleaved, a receipt each, B compared against A); `compare_to` (the new receipt compared against an archived
one); `sign` (an HMAC envelope beside the receipt); `archive` (the verified receipt added to a shared
archive, a folder or an object store, where `compare_to` also resolves). Nothing here prints: progress goes to
the caller's `Progress`, and the outcome says what to show and which exit code the run earns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba

from engine.model import Model, set_threads
from engine.strict import resolve_strict
from harness.comparison.archive import add_bytes
from harness.comparison.compare import Comparison, compare
from harness.machine.bandwidth import measure_read_bandwidth
from harness.peers.llama_cpp import reference_file
from harness.peers.vs_llama_cpp import LlamaCppRunner, peer_section
from harness.phases.benchmark import run_benchmark
from harness.phases.load import LoadedModel
from harness.phases.probe import run_probe
from harness.phases.timing import run_timing
from harness.phases.workload import DEFAULT_PROMPT, ModelSource, prompt_ids
from harness.progress import SILENT, Progress
from harness.receipts.build import build_receipt, model_section
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


def run_benchmark_session(request: BenchmarkRequest, progress: Progress = SILENT) -> BenchmarkOutcome:
    """Validate the request, then run it; every refusal comes before the first model byte is written."""
    plan = request.validate()
    started_at = utc_timestamp()
    source = model_source(request.model, request.preset, request.fmt, plan.arch, request.model_seed, progress)
    if request.vs_llama_cpp:
        source = _llama_cpp_file(source, progress)
    set_threads(request.threads)
    read_gbps = None
    if request.bandwidth:
        with progress.status("measuring read bandwidth"):
            read_gbps = measure_read_bandwidth()
    if plan.pair is not None:
        return _ab_run(plan, source, started_at, read_gbps, progress)
    return _single_run(plan, source, started_at, read_gbps, progress)


class _Run:
    """What both kinds of run share: the workload, the model's identity hashed once, receipts written once."""

    def __init__(self, plan: BenchmarkPlan, source: ModelSource, started_at: str, first: Model) -> None:
        r = plan.request
        self.plan, self.source, self.started_at = plan, source, started_at
        self.prompt_text = r.prompt or DEFAULT_PROMPT
        self.ids = prompt_ids(first.tokenizer, self.prompt_text, r.prompt_tokens)
        self.digest: FileDigest = file_digest(source.path)
        self.facts = model_section(first.file, str(source.path), self.digest)

    def write(
        self,
        loaded: LoadedModel,
        phases: dict[str, Any],
        output: list[int],
        read_gbps: float | None,
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
            read_gbps=read_gbps,
            peer=peer,
        )
        result = verify(receipt, model_digest=self.digest)
        path = write_receipt(receipt, r.receipts_dir, schema_checked=result.schema_ok)
        envelope = sign_receipt_file(path, r.key_env or "") if r.sign else None
        archived = None
        if r.archive is not None and result.ok:
            data = read_regular_file(path, MAX_RECEIPT_BYTES)
            archived, _ = add_bytes(data, receipt, r.archive, str(path), verified=result)
        return WrittenReceipt(receipt, path, result, envelope, side, archived)


def _strict(request: BenchmarkRequest) -> bool | None:
    return True if request.strict_loader else None


def _single_run(
    plan: BenchmarkPlan, source: ModelSource, started_at: str, read_gbps: float | None, progress: Progress
) -> BenchmarkOutcome:
    r = plan.request
    loaded = ready_model(source, r.kernel, r.threads, _strict(r), progress)
    run = _Run(plan, source, started_at, loaded.model)
    runner = None
    if r.vs_llama_cpp:
        with progress.status(f"loading {source.path} into llama.cpp"):
            threads = r.threads or numba.config.NUMBA_NUM_THREADS
            runner = LlamaCppRunner(source.path, len(run.ids) + r.tokens + 1, threads)
    phases, output, peer = _phases(plan, loaded.model, run.ids, runner, run.digest.sha256, progress)
    written = run.write(loaded, phases, output, _bandwidth_again(read_gbps, progress), peer)
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
    return BenchmarkOutcome((written,), comparison)


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
    plan: BenchmarkPlan, source: ModelSource, started_at: str, read_gbps: float | None, progress: Progress
) -> BenchmarkOutcome:
    """Load each side once, run the interleaved rounds, write and verify a receipt each, compare B with A."""
    r = plan.request
    assert plan.pair is not None
    loaded = []
    for side in plan.pair:
        progress.note(f"side {side.describe()}")
        loaded.append(ready_model(source, side.kernel, side.threads, _strict(r), progress))
    run = _Run(plan, source, started_at, loaded[0].model)
    progress.note("A/B: phases 1 and 2 are not run; rounds alternate A B, each side on its own loaded model")
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
    read_gbps = _bandwidth_again(read_gbps, progress)
    written = []
    for side, one, (section, output) in zip(plan.pair, loaded, results, strict=True):
        side.activate()  # the receipt records the thread count this side ran with
        written.append(run.write(one, {"benchmark": section}, output, read_gbps, side=side))
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


def _bandwidth_again(before: float | None, progress: Progress) -> float | None:
    """The higher of the readings before and after the run: one probe can land on a neighbour's burst of
    memory traffic (seen here: 15.9 GB/s once, 28.4-28.8 otherwise); the floor is what the machine can do."""
    if before is None:
        return None
    with progress.status("measuring read bandwidth again"):
        return max(before, measure_read_bandwidth())


def _llama_cpp_file(source: ModelSource, progress: Progress) -> ModelSource:
    """The file both engines run: the model itself or its llama.cpp-readable copy beside it."""
    with progress.status(f"checking that llama.cpp reads {source.path} as the engine does"):
        ref = reference_file(source.path)
    for change in ref.changes:
        progress.note(f"llama.cpp copy {ref.path}: {change}")
    return ModelSource(ref.path, source.preset, source.fmt, source.arch, source.seed)
