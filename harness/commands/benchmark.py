"""`probe`, `timing` and `benchmark`: the three timed phases, each its own command and receipt section.

`benchmark` runs probe and timing first (unless told not to), then the measured repetitions, writes the
receipt atomically under --receipts-dir, verifies it and prints the report. Exit codes: 0 verified receipt,
1 written but failing verification, 2 bad input.

`benchmark --vs-llama-cpp` runs upstream llama.cpp (the optional `parity` extra) on the same file, its
rounds interleaved with the engine's, and records its figures and the speed ratios in the receipt's `peer`.

`benchmark --compare-to SELECTOR` then compares the new receipt against an archived one, and
`benchmark --ab-kernel A,B` / `--ab-threads A,B` measures two configurations interleaved in one process and
compares B against A; both exit with `compare`'s codes (0 no regression, 1 regression, 2 error or not
comparable, 3 inconclusive).
"""

import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numba
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from engine.atomic import atomic_write
from engine.generate import SamplingParams
from engine.model import Model, load_model, set_threads
from engine.strict import resolve_strict
from harness.commands.archive import ThresholdOpt, render_comparison
from harness.commands.options import (
    ArchChoice,
    ArchOpt,
    FormatChoice,
    FormatOpt,
    JsonOpt,
    KernelChoice,
    KernelOpt,
    ModelOpt,
    ModelSeedOpt,
    PhaseRecordDirOpt,
    PresetChoice,
    PresetOpt,
    PromptOpt,
    PromptTokensOpt,
    ReceiptsDirOpt,
    StrictOpt,
    ThreadsOpt,
    strict_flag,
)
from harness.comparison import archive
from harness.comparison.compare import compare
from harness.comparison.stats import THRESHOLD
from harness.comparison.tables import OutputFormat
from harness.errors import HarnessError
from harness.machine.bandwidth import measure_read_bandwidth
from harness.machine.host import host_facts
from harness.peers.parity import llama_cpp_missing, reference_file
from harness.peers.vs_llama_cpp import LlamaCppRunner, peer_section
from harness.phases.benchmark import run_benchmark
from harness.phases.probe import run_probe
from harness.phases.timing import run_timing
from harness.phases.workload import DEFAULT_PROMPT, ModelSource, model_facts, prompt_ids, resolve_model
from harness.receipts.build import build_receipt
from harness.receipts.files import utc_timestamp, write_receipt
from harness.receipts.signing import key_from_env, sign_receipt_file
from harness.receipts.verify import verify
from harness.reporting.receipt import render
from harness.runtime import interrupts
from harness.runtime.limits import MaxMemoryOpt, TimeoutOpt, resource_limits
from harness.session import ab

DEFAULT_PRESET = PresetChoice("2b-4t")
DEFAULT_FORMAT = FormatChoice("i2s")
DEFAULT_ARCH = ArchChoice("bitnet-b1.58")
VS_LLAMA_CPP_ARCH = ArchChoice("bitnet")
DEFAULT_KERNEL = KernelChoice("auto")
err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add `probe`, `timing` and `benchmark` to the top-level app."""
    app.command("probe")(probe)
    app.command("timing")(timing)
    app.command("benchmark")(benchmark)


@contextmanager
def _progress():
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=False) as progress:
        yield progress


def _load(
    source: ModelSource, kernel: KernelChoice, threads: int | None, strict_loader: bool
) -> tuple[Model, float]:
    """Load the model and compile (or load from numba's cache) every kernel, outside any measured time."""
    with err.status(f"loading {source.path} and preparing kernels"):
        model = load_model(
            source.path, kernel=kernel.value, threads=threads, strict=strict_flag(strict_loader)
        )
        for warning in model.file.warnings:
            err.print(f"warning: {warning}", markup=False)
        jit_seconds = model.warmup()
    interrupts.raise_if_swallowed()
    err.print(
        f"loaded in {model.load_seconds:.2f} s; kernels ready in {jit_seconds:.2f} s (JIT, not measured)"
    )
    return model, jit_seconds


def _source(
    model: Path | None, preset: PresetChoice, fmt: FormatChoice, arch: ArchChoice, seed: int
) -> ModelSource:
    if model is None:
        with err.status(f"preparing the {preset.value} {fmt.value} preset model (written once, then cached)"):
            return resolve_model(None, preset.value, fmt.value, arch.value, seed)
    return resolve_model(model, preset.value, fmt.value, arch.value, seed)


def _write_phase_record(folder: Path, phase: str, model: Model, source: ModelSource, section: dict) -> Path:
    """A phase's own JSON record: its receipt section with the model identity and host, written atomically."""
    stamp = utc_timestamp()
    record = {
        "schema_version": "1.0.0",
        "phase": phase,
        "timestamp": stamp,
        "model": model_facts(model.file, str(source.path)),
        "host": host_facts(),
        phase: section,
    }
    name = re.sub(r"[^0-9A-Za-z]", "", stamp) + f"_{source.preset or source.path.stem}_{phase}.json"
    target = folder / "phases" / name
    with atomic_write(target, exclusive=True) as fh:
        fh.write(json.dumps(record, indent=2, sort_keys=True).encode() + b"\n")
    return target


def _probe_tables(section: dict[str, Any]) -> list[Table]:
    tensors = Table(title="Phase 1: weight tensors")
    for col in ("tensor", "type", "flavor", "shape", "bytes", "kernel"):
        tensors.add_column(col)
    for row in section["tensors"]:
        shape = "x".join(str(d) for d in row["shape"])
        tensors.add_row(
            row["name"], row["format"], row["flavor"], shape, f"{row['bytes']:,}", row["kernel"] or "-"
        )
    candidates = Table(title="Phase 1: kernel candidates (agreement with numpy float64, speed at the median)")
    for col in ("shape", "kernel", "max abs error", "GB/s", "GMAC/s"):
        candidates.add_column(col, justify="right")
    for row in section["candidates"]:
        shape = "x".join(str(d) for d in row["shape"])
        err_ = f"{row['max_abs_error']:.3g}"
        candidates.add_row(shape, row["kernel"], err_, f"{row['gbps']:.2f}", f"{row['gmacs']:.2f}")
    return [tensors, candidates]


def probe(
    model: ModelOpt = None,
    preset: PresetOpt = DEFAULT_PRESET,
    fmt: FormatOpt = DEFAULT_FORMAT,
    arch: ArchOpt = DEFAULT_ARCH,
    model_seed: ModelSeedOpt = 0,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    strict_loader: StrictOpt = False,
    as_json: JsonOpt = False,
    receipts_dir: PhaseRecordDirOpt = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Phase 1, quant probe: each weight tensor's format and kernel; each kernel's error and speed."""
    with resource_limits(max_memory, timeout):
        source = _source(model, preset, fmt, arch, model_seed)
        loaded, _ = _load(source, kernel, threads, strict_loader)
        with _progress() as progress:
            task = progress.add_task("probing kernels", total=None)
            section = run_probe(loaded, lambda what: progress.update(task, description=f"probing {what}"))
        if receipts_dir is not None:
            err.print(f"record: {_write_phase_record(receipts_dir, 'probe', loaded, source, section)}")
        if as_json:
            typer.echo(json.dumps(section, indent=2))
            return
        for table in _probe_tables(section):
            Console().print(table)


def timing(
    model: ModelOpt = None,
    preset: PresetOpt = DEFAULT_PRESET,
    fmt: FormatOpt = DEFAULT_FORMAT,
    arch: ArchOpt = DEFAULT_ARCH,
    model_seed: ModelSeedOpt = 0,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Single-token decode steps to time.")] = 3,
    prompt: PromptOpt = None,
    prompt_tokens: PromptTokensOpt = None,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    strict_loader: StrictOpt = False,
    as_json: JsonOpt = False,
    receipts_dir: PhaseRecordDirOpt = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Phase 2, per-token latency: stage times (embed, forward, logits, sample) and per-layer times."""
    with resource_limits(max_memory, timeout):
        source = _source(model, preset, fmt, arch, model_seed)
        loaded, _ = _load(source, kernel, threads, strict_loader)
        ids = prompt_ids(loaded.tokenizer, prompt or DEFAULT_PROMPT, prompt_tokens)
        section = run_timing(loaded, ids, steps, SamplingParams())
        if receipts_dir is not None:
            err.print(f"record: {_write_phase_record(receipts_dir, 'timing', loaded, source, section)}")
        if as_json:
            typer.echo(json.dumps(section, indent=2))
            return
        table = Table(title=f"Phase 2: decode step latency over {steps} steps (ms)")
        for col in ("stage", "p50", "p90", "p99"):
            table.add_column(col, justify="right")
        for stage, pct in section["percentiles"].items():
            table.add_row(stage, *(f"{pct[p] * 1e3:.3f}" for p in ("p50", "p90", "p99")))
        Console().print(table)
        layers = Table(title="Phase 2: per-layer time of each step (ms)")
        layers.add_column("layer", justify="right")
        for i in range(len(section["steps"])):
            layers.add_column(f"step {i + 1}", justify="right")
        for layer in range(len(section["steps"][0]["layers"])):
            layers.add_row(str(layer), *(f"{step['layers'][layer] * 1e3:.3f}" for step in section["steps"]))
        Console().print(layers)


def benchmark(
    model: ModelOpt = None,
    preset: PresetOpt = DEFAULT_PRESET,
    fmt: FormatOpt = DEFAULT_FORMAT,
    arch: Annotated[
        ArchChoice | None,
        typer.Option(
            "--arch",
            help="Architecture of the preset model (default: bitnet-b1.58; bitnet with --vs-llama-cpp, the "
            "only one llama.cpp runs).",
        ),
    ] = None,
    model_seed: ModelSeedOpt = 0,
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="Tokens to generate per repetition.")] = 128,
    prompt: PromptOpt = None,
    prompt_tokens: PromptTokensOpt = 32,
    repetitions: Annotated[int, typer.Option("--repetitions", min=1, help="Measured repetitions.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Unmeasured repetitions first.")] = 1,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy.")] = 0.0,
    top_k: Annotated[int, typer.Option("--top-k", min=0, help="Keep the k likeliest tokens (0 = all).")] = 0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus probability mass, in (0, 1].")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Sampling seed.")] = 0,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    run_probe_phase: Annotated[bool, typer.Option("--probe/--no-probe", help="Run phase 1 first.")] = True,
    run_timing_phase: Annotated[bool, typer.Option("--timing/--no-timing", help="Run phase 2 first.")] = True,
    timing_steps: Annotated[int, typer.Option("--timing-steps", min=1, help="Decode steps in phase 2.")] = 3,
    bandwidth: Annotated[
        bool, typer.Option("--bandwidth/--no-bandwidth", help="Measure read bandwidth for the decode floor.")
    ] = True,
    receipts_dir: ReceiptsDirOpt = Path("receipts"),
    strict_loader: StrictOpt = False,
    as_json: JsonOpt = False,
    compare_to: Annotated[
        str | None,
        typer.Option(
            "--compare-to",
            help="Then compare against an archived receipt in --receipts-dir (a path, latest, latest~N, "
            "commit prefix, YYYY-MM-DD; resolved before the run) and exit with compare's codes.",
        ),
    ] = None,
    ab_kernel: Annotated[
        str | None,
        typer.Option(
            "--ab-kernel",
            help="A/B run of two kernel modes, e.g. i2s,tl2: interleaved A B A B in one process, a receipt "
            "for each, B compared against A (phases 1 and 2 are not run).",
        ),
    ] = None,
    ab_threads: Annotated[
        str | None,
        typer.Option("--ab-threads", help="A/B run of two thread counts, e.g. 1,2 (as --ab-kernel)."),
    ] = None,
    threshold: ThresholdOpt = THRESHOLD * 100,
    vs_llama_cpp: Annotated[
        bool,
        typer.Option(
            "--vs-llama-cpp",
            help="Also run upstream llama.cpp (extra 'parity') on the same file, rounds interleaved engine, "
            "llama.cpp; its figures and the speed ratios go into the receipt's peer section. A bitnet-arch "
            "model; I2_S is converted to a TQ2_0 copy beside it, which both engines run.",
        ),
    ] = False,
    sign: Annotated[
        bool, typer.Option("--sign", help="Sign the receipt: an HMAC-SHA256 DSSE envelope beside it.")
    ] = False,
    key_env: Annotated[
        str | None, typer.Option("--key-env", help="Environment variable holding the signing key.")
    ] = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
) -> None:
    """Phase 3, the full benchmark: prefill and decode speed, time to first token, latency distribution.

    Load and JIT time are measured apart from the timed repetitions. The receipt is written atomically under
    --receipts-dir, verified, and reported.
    """
    if sign and key_env is None:
        raise HarnessError("--sign needs --key-env NAME, the environment variable that holds the key")
    if sign:
        key_from_env(key_env)  # a missing key fails now, not after the run
    with resource_limits(max_memory, timeout):
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        started_at = utc_timestamp()
        pair = ab.sides(ab_kernel, ab_threads, kernel.value, threads)
        if pair is not None and compare_to is not None:
            raise HarnessError("--compare-to and --ab-kernel/--ab-threads are separate modes; give one")
        if vs_llama_cpp:
            _check_vs_llama_cpp(pair is not None, params)
        base_path = archive.resolve(compare_to, receipts_dir) if compare_to is not None else None
        base_receipt = archive.load_checked(base_path) if base_path is not None else None
        if arch is None:
            arch = VS_LLAMA_CPP_ARCH if vs_llama_cpp else DEFAULT_ARCH
        source = _source(model, preset, fmt, arch, model_seed)
        if vs_llama_cpp:
            source = _llama_cpp_file(source)
        set_threads(threads)
        read_gbps = None
        if bandwidth:
            with err.status("measuring read bandwidth"):
                read_gbps = measure_read_bandwidth()
        if pair is not None:
            if sign:
                raise HarnessError(
                    "--sign signs a single run's receipt; drop it for --ab-kernel/--ab-threads"
                )
            run = _ABRun(source, strict_loader, prompt, prompt_tokens, tokens, repetitions, warmup, params)
            raise typer.Exit(
                run.execute(pair, started_at, read_gbps, receipts_dir, as_json, threshold / 100.0)
            )
        loaded, jit_seconds = _load(source, kernel, threads, strict_loader)
        ids = prompt_ids(loaded.tokenizer, prompt or DEFAULT_PROMPT, prompt_tokens)
        facts = model_facts(loaded.file, str(source.path))
        runner = None
        if vs_llama_cpp:
            with err.status(f"loading {source.path} into llama.cpp"):
                runner = LlamaCppRunner(
                    source.path, len(ids) + tokens + 1, threads or numba.config.NUMBA_NUM_THREADS
                )
        phases: dict[str, Any] = {}
        peer = None
        with _progress() as progress:
            if run_probe_phase:
                task = progress.add_task("phase 1: probe", total=None)
                phases["probe"] = run_probe(
                    loaded, lambda what: progress.update(task, description=f"probe: {what}")
                )
                progress.update(task, total=1, completed=1, description="phase 1: probe")
                interrupts.raise_if_swallowed()  # the probe loads the other kernel families
            if run_timing_phase:
                task = progress.add_task("phase 2: timing", total=1)
                phases["timing"] = run_timing(loaded, ids, timing_steps, params)
                progress.update(task, completed=1)
            if runner is None:
                task = progress.add_task("phase 3: benchmark", total=warmup + repetitions)
                phases["benchmark"], output = run_benchmark(
                    loaded,
                    ids,
                    tokens,
                    repetitions,
                    warmup,
                    params,
                    lambda done, _t: progress.update(task, completed=done),
                )
            else:
                task = progress.add_task("phase 3: benchmark, rounds engine then llama.cpp", total=None)
                (phases["benchmark"], output), (peer_bench, _) = ab.interleave(
                    [
                        ab.engine_generation(
                            ab.Side("engine", kernel.value, threads), loaded, ids, tokens, params
                        ),
                        lambda _first: runner.generation(ids, tokens),
                    ],
                    repetitions,
                    warmup,
                    lambda done, total: progress.update(task, completed=done, total=total),
                )
                peer = peer_section(runner, facts["sha256"], phases["benchmark"], peer_bench)
        read_gbps = _bandwidth_again(read_gbps)
        receipt = build_receipt(
            started_at=started_at,
            model=loaded,
            model_section=facts,
            phases=phases,
            prompt_text=prompt or DEFAULT_PROMPT,
            prompt=ids,
            params=params,
            tokens_requested=tokens,
            output_tokens=output,
            strict=resolve_strict(strict_flag(strict_loader)),
            jit_seconds=jit_seconds,
            read_gbps=read_gbps,
            peer=peer,
        )
        path = write_receipt(receipt, receipts_dir)
        envelope = sign_receipt_file(path, key_env) if sign else None
        result = verify(receipt, model_path=source.path)
        comparison = None
        if base_receipt is not None:
            comparison = compare(
                base_receipt,
                receipt,
                base_label=str(base_path),
                new_label=str(path),
                threshold=threshold / 100.0,
            )
        if as_json:
            out = {"path": str(path), "receipt": receipt, "verification": result.to_dict()}
            if comparison is not None:
                out["comparison"] = comparison.to_dict()
            if envelope is not None:
                out["signature"] = str(envelope)
            typer.echo(json.dumps(out, indent=2))
        else:
            render(receipt, Console(), result)
            typer.echo(f"receipt: {path}")
            if envelope is not None:
                typer.echo(f"signature: {envelope}")
            if comparison is not None:
                render_comparison(comparison, OutputFormat.rich)
        if comparison is not None:
            raise typer.Exit(comparison.exit_code)
        raise typer.Exit(0 if result.ok else 1)


def _bandwidth_again(before: float | None) -> float | None:
    """The higher of the readings before and after the run: one probe can land on a neighbour's burst of
    memory traffic (seen here: 15.9 GB/s once, 28.4-28.8 otherwise); the floor is what the machine can do."""
    if before is None:
        return None
    with err.status("measuring read bandwidth again"):
        return max(before, measure_read_bandwidth())


def _check_vs_llama_cpp(ab_run: bool, params: SamplingParams) -> None:
    if ab_run:
        raise HarnessError("--vs-llama-cpp and --ab-kernel/--ab-threads are separate modes; give one")
    if params.temperature != 0:
        raise HarnessError("--vs-llama-cpp compares greedy decoding; drop --temperature")
    reason = llama_cpp_missing()
    if reason is not None:
        raise HarnessError(f"--vs-llama-cpp: {reason}")


def _llama_cpp_file(source: ModelSource) -> ModelSource:
    """The file both engines run: the model itself or its llama.cpp-readable copy beside it."""
    with err.status(f"checking that llama.cpp reads {source.path} as the engine does"):
        ref = reference_file(source.path)
    for change in ref.changes:
        err.print(f"llama.cpp copy {ref.path}: {change}", markup=False)
    return ModelSource(ref.path, source.preset, source.fmt, source.arch, source.seed)


class _ABRun:
    """`benchmark --ab-*`: load each side once, run the interleaved rounds, write, verify and compare."""

    def __init__(
        self,
        source: ModelSource,
        strict_loader: bool,
        prompt: str | None,
        prompt_tokens: int | None,
        tokens: int,
        repetitions: int,
        warmup: int,
        params: SamplingParams,
    ) -> None:
        self.source, self.strict_loader, self.prompt, self.prompt_tokens = (
            source,
            strict_loader,
            prompt,
            prompt_tokens,
        )
        self.tokens, self.repetitions, self.warmup, self.params = tokens, repetitions, warmup, params

    def execute(
        self,
        pair: tuple[ab.Side, ab.Side],
        started_at: str,
        read_gbps: float | None,
        receipts_dir: Path,
        as_json: bool,
        threshold: float,
    ) -> int:
        """Run, write both receipts, compare B against A; returns compare's exit code."""
        loaded = []
        for side in pair:
            err.print(f"side {side.describe()}")
            loaded.append(
                (side, *_load(self.source, KernelChoice(side.kernel), side.threads, self.strict_loader))
            )
        first = loaded[0][1]
        ids = prompt_ids(first.tokenizer, self.prompt or DEFAULT_PROMPT, self.prompt_tokens)
        facts = model_facts(first.file, str(self.source.path))
        err.print("A/B: phases 1 and 2 are not run; rounds alternate A B, each side on its own loaded model")
        with _progress() as progress:
            task = progress.add_task("A/B rounds", total=2 * (self.warmup + self.repetitions))
            results = ab.run_interleaved(
                [(side, model) for side, model, _ in loaded],
                ids,
                self.tokens,
                self.repetitions,
                self.warmup,
                self.params,
                lambda done, _t: progress.update(task, completed=done),
            )
        read_gbps = _bandwidth_again(read_gbps)
        receipts, paths, verdicts = [], [], []
        for (side, model, jit_seconds), (section, output) in zip(loaded, results, strict=True):
            side.activate()  # the receipt records the thread count this side ran with
            receipt = build_receipt(
                started_at=started_at,
                model=model,
                model_section=dict(facts),
                phases={"benchmark": section},
                prompt_text=self.prompt or DEFAULT_PROMPT,
                prompt=ids,
                params=self.params,
                tokens_requested=self.tokens,
                output_tokens=output,
                strict=resolve_strict(strict_flag(self.strict_loader)),
                jit_seconds=jit_seconds,
                read_gbps=read_gbps,
            )
            receipts.append(receipt)
            paths.append(write_receipt(receipt, receipts_dir))
            verdicts.append(verify(receipt, model_path=self.source.path))
        varied = ("threads",) if pair[0].threads != pair[1].threads else ()
        comparison = compare(
            receipts[0],
            receipts[1],
            base_label=f"A ({pair[0].describe()[3:]}) {paths[0]}",
            new_label=f"B ({pair[1].describe()[3:]}) {paths[1]}",
            threshold=threshold,
            ignore=varied,
            same_process=True,
        )
        if as_json:
            sides_out = [
                {
                    "side": s.name,
                    "kernel": s.kernel,
                    "threads": r["threads"],
                    "path": str(p),
                    "verification": v.to_dict(),
                }
                for s, r, p, v in zip(pair, receipts, paths, verdicts, strict=True)
            ]
            typer.echo(json.dumps({"sides": sides_out, "comparison": comparison.to_dict()}, indent=2))
        else:
            for side, path, result in zip(pair, paths, verdicts, strict=True):
                state = "verified" if result.ok else "FAILED verification"
                typer.echo(f"receipt {side.name}: {path} ({state})")
            render_comparison(comparison, OutputFormat.rich)
        return comparison.exit_code
