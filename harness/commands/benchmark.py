"""`benchmark`: phase 3, the full benchmark (after phases 1 and 2 unless told not to), written as a receipt.

The receipt is written atomically under --receipts-dir, verified and reported. Exit codes: 0 verified
receipt, 1 written but failing verification, 2 bad input. `--vs-llama-cpp` also runs upstream llama.cpp
(the optional `parity` extra) on the same file, rounds interleaved, into the receipt's `peer`.
`--compare-to SELECTOR` then compares the new receipt against an archived one, and `--ab-kernel A,B` /
`--ab-threads A,B` measures two configurations interleaved in one process and compares B against A; both
exit with `compare`'s codes (0 no regression, 1 regression, 2 error or not comparable, 3 inconclusive).
"""

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from harness.commands.console import ConsoleProgress
from harness.commands.options import (
    DEFAULT_FORMAT,
    DEFAULT_KERNEL,
    DEFAULT_PRESET,
    ArchChoice,
    FormatOpt,
    JsonOpt,
    KernelOpt,
    MaxMemoryOpt,
    ModelOpt,
    ModelSeedOpt,
    PresetOpt,
    PromptOpt,
    PromptTokensOpt,
    ReceiptsDirOpt,
    SeedOpt,
    StrictOpt,
    SummaryMdOpt,
    TemperatureOpt,
    ThreadsOpt,
    ThresholdOpt,
    TimeoutOpt,
    TopKOpt,
    TopPOpt,
)
from harness.commands.render import Reports, render_comparison
from harness.comparison.stats import THRESHOLD
from harness.comparison.tables import OutputFormat
from harness.reporting.receipt import render
from harness.reporting.summary import RunReceipt, benchmark_markdown
from harness.runtime.limits import resource_limits
from harness.session.benchmark import BenchmarkOutcome, run_benchmark_session
from harness.session.request import BenchmarkRequest

ArchOrDefaultOpt = Annotated[
    ArchChoice | None,
    typer.Option(
        "--arch",
        help="Architecture of the preset model (default: bitnet-b1.58; bitnet with --vs-llama-cpp, the "
        "only one llama.cpp runs).",
    ),
]
CompareToOpt = Annotated[
    str | None,
    typer.Option(
        "--compare-to",
        help="Then compare against an archived receipt in --archive, else --receipts-dir (a path, latest, "
        "latest~N, commit prefix, YYYY-MM-DD; resolved before the run) and exit with compare's codes.",
    ),
]
AbKernelOpt = Annotated[
    str | None,
    typer.Option(
        "--ab-kernel",
        help="A/B run of two kernel modes, e.g. i2s,tl2: interleaved A B A B in one process, a receipt "
        "for each, B compared against A (phases 1 and 2 are not run).",
    ),
]
AbThreadsOpt = Annotated[
    str | None, typer.Option("--ab-threads", help="A/B run of two thread counts, e.g. 1,2 (as --ab-kernel).")
]
SharedArchiveOpt = Annotated[
    str | None,
    typer.Option(
        "--archive",
        help="A shared archive (a folder or an fsspec URL such as s3://bucket/prefix): the verified receipt "
        "is added to it, and --compare-to resolves there.",
    ),
]
VsLlamaCppOpt = Annotated[
    bool,
    typer.Option(
        "--vs-llama-cpp",
        help="Also run upstream llama.cpp (extra 'parity') on the same file, rounds interleaved engine, "
        "llama.cpp; its figures and the speed ratios go into the receipt's peer section. A bitnet-arch "
        "model; I2_S is converted to a TQ2_0 copy beside it, which both engines run.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add `benchmark` to the top-level app."""
    app.command("benchmark")(benchmark)


def benchmark(
    model: ModelOpt = None,
    preset: PresetOpt = DEFAULT_PRESET,
    fmt: FormatOpt = DEFAULT_FORMAT,
    arch: ArchOrDefaultOpt = None,
    model_seed: ModelSeedOpt = 0,
    tokens: Annotated[int, typer.Option("--tokens", min=1, help="Tokens to generate per repetition.")] = 128,
    prompt: PromptOpt = None,
    prompt_tokens: PromptTokensOpt = 32,
    repetitions: Annotated[int, typer.Option("--repetitions", min=1, help="Measured repetitions.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Unmeasured repetitions first.")] = 1,
    temperature: TemperatureOpt = 0.0,
    top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    probe_phase: Annotated[bool, typer.Option("--probe/--no-probe", help="Run phase 1 first.")] = True,
    timing_phase: Annotated[bool, typer.Option("--timing/--no-timing", help="Run phase 2 first.")] = True,
    timing_steps: Annotated[int, typer.Option("--timing-steps", min=1, help="Decode steps in phase 2.")] = 3,
    bandwidth: Annotated[
        bool, typer.Option("--bandwidth/--no-bandwidth", help="Measure read bandwidth for the decode floor.")
    ] = True,
    receipts_dir: ReceiptsDirOpt = Path("receipts"),
    archive: SharedArchiveOpt = None,
    strict_loader: StrictOpt = False,
    as_json: JsonOpt = False,
    compare_to: CompareToOpt = None,
    ab_kernel: AbKernelOpt = None,
    ab_threads: AbThreadsOpt = None,
    threshold: ThresholdOpt = THRESHOLD * 100,
    vs_llama_cpp: VsLlamaCppOpt = False,
    sign: Annotated[
        bool, typer.Option("--sign", help="Sign the receipt: an HMAC-SHA256 DSSE envelope beside it.")
    ] = False,
    key_env: Annotated[
        str | None, typer.Option("--key-env", help="Environment variable holding the signing key.")
    ] = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
    summary_md: SummaryMdOpt = None,
) -> None:
    """Phase 3, the full benchmark: prefill and decode speed, time to first token, latency distribution.

    Load and JIT time are measured apart from the timed repetitions. The receipt is written atomically under
    --receipts-dir, verified, and reported.
    """
    options = dict(locals())  # every parameter but the four below is a BenchmarkRequest field of that name
    for name in ("as_json", "max_memory", "timeout", "summary_md"):
        del options[name]
    reports = Reports(None, summary_md)
    options["threshold"] = threshold / 100.0
    request = BenchmarkRequest(**{k: v.value if isinstance(v, Enum) else v for k, v in options.items()})
    with resource_limits(max_memory, timeout):
        outcome = run_benchmark_session(request, ConsoleProgress())
        _show(outcome, as_json)
    reports.write(None, lambda: benchmark_markdown(_summary_receipts(outcome), outcome.comparison))
    raise typer.Exit(outcome.exit_code)


def _summary_receipts(outcome: BenchmarkOutcome) -> list[RunReceipt]:
    return [
        RunReceipt(
            f"side {w.side.describe()}" if w.side else "receipt",
            str(w.path),
            w.receipt,
            w.verification,
            w.archived,
        )
        for w in outcome.receipts
    ]


def _json(outcome: BenchmarkOutcome) -> dict[str, Any]:
    if outcome.ab:
        sides = [
            {
                "side": w.side.name if w.side else None,
                "kernel": w.side.kernel if w.side else None,
                "threads": w.receipt["threads"],
                "path": str(w.path),
                "verification": w.verification.to_dict(),
            }
            for w in outcome.receipts
        ]
        return {"sides": sides, "comparison": outcome.comparison.to_dict() if outcome.comparison else None}
    (one,) = outcome.receipts
    out: dict[str, Any] = {
        "path": str(one.path),
        "receipt": one.receipt,
        "verification": one.verification.to_dict(),
    }
    if outcome.comparison is not None:
        out["comparison"] = outcome.comparison.to_dict()
    if one.signature is not None:
        out["signature"] = str(one.signature)
    if one.archived is not None:
        out["archived"] = one.archived
    return out


def _show(outcome: BenchmarkOutcome, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_json(outcome), indent=2))
        return
    if outcome.ab:
        for w in outcome.receipts:
            state = "verified" if w.verification.ok else "FAILED verification"
            typer.echo(f"receipt {w.side.name if w.side else ''}: {w.path} ({state})")
    else:
        (one,) = outcome.receipts
        render(one.receipt, Console(), one.verification)
        typer.echo(f"receipt: {one.path}")
        if one.archived is not None:
            typer.echo(f"archived: {one.archived}")
        if one.signature is not None:
            typer.echo(f"signature: {one.signature}")
    if outcome.comparison is not None:
        render_comparison(outcome.comparison, OutputFormat.rich)
