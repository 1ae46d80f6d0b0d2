"""`benchmark`: phase 3, the full benchmark (after phases 1 and 2 unless told not to), written as a receipt.

The receipt is written atomically under --receipts-dir, verified and reported. Exit codes: 0 verified
receipt, 1 written but failing verification, 2 bad input. `--vs-llama-cpp` also runs upstream llama.cpp
(the optional `parity` extra) on the same file, rounds interleaved, into the receipt's `peer`.
`--compare-to SELECTOR` then compares the new receipt against an archived one, and `--ab-kernel A,B` /
`--ab-threads A,B` measures two configurations interleaved in one process and compares B against A; both
exit with `compare`'s codes (0 no regression, 1 regression, 2 error or not comparable, 3 inconclusive).

Sweeps: `--model`, `--format`, `--kernel`, `--threads`, `--prompt-tokens` and `--tokens` take comma lists (or
the option repeated); every combination runs in this process, each writing its own receipt, and a summary
table (one row per receipt) follows, in the terminal or as `--output-format md|csv|json|jsonl`, on stdout or
written atomically to `--output FILE`. Exit 0 when every receipt verifies, else 1.
"""

import json
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from engine.atomic import atomic_write
from engine.constants import WEIGHT_FORMATS
from engine.model import KERNEL_MODES
from harness.commands.console import ConsoleProgress
from harness.commands.options import (
    DEFAULT_PRESET,
    ArchChoice,
    JsonOpt,
    MaxMemoryOpt,
    ModelSeedOpt,
    PresetOpt,
    PromptOpt,
    ReceiptsDirOpt,
    RetuneOpt,
    SeedOpt,
    StrictOpt,
    SummaryMdOpt,
    TemperatureOpt,
    ThresholdOpt,
    TimeoutOpt,
    TopKOpt,
    TopPOpt,
    one_of,
    positive_int,
    sweep_axis,
    sweep_option,
)
from harness.commands.render import Reports, render_comparison
from harness.comparison.runs import compact_frame
from harness.comparison.stats import THRESHOLD
from harness.comparison.tables import OutputFormat, TableFormat, frame_text, records
from harness.errors import HarnessError
from harness.reporting.receipt import render
from harness.reporting.summary import RunReceipt, benchmark_markdown
from harness.reporting.tables import rich_table
from harness.runtime.limits import resource_limits
from harness.session.benchmark import BenchmarkOutcome, run_benchmark_session
from harness.session.request import SWEEP_AXES, BenchmarkRequest

# Sweep axes; the short names are llama-bench's.
COUNT = "an integer >= 1"
ModelsOpt = Annotated[
    list[Any] | None,
    sweep_option(
        "--model",
        "-m",
        item=Path,
        what="a file name",
        metavar="FILE[,FILE...]",
        help="GGUF model file (default: the synthetic --preset model)",
    ),
]
FormatsOpt = Annotated[
    list[Any] | None,
    sweep_option(
        "--format",
        item=one_of(WEIGHT_FORMATS),
        what=f"one of {', '.join(WEIGHT_FORMATS)}",
        metavar="FMT[,FMT...]",
        help=f"Weight format of the preset model: {'|'.join(WEIGHT_FORMATS)} (default: i2s)",
    ),
]
KernelsOpt = Annotated[
    list[Any] | None,
    sweep_option(
        "--kernel",
        item=one_of(KERNEL_MODES),
        what=f"one of {', '.join(KERNEL_MODES)}",
        metavar="K[,K...]",
        help=f"Ternary kernel family, {'|'.join(KERNEL_MODES)}; auto times each on this CPU (default: auto)",
    ),
]
ThreadsListOpt = Annotated[
    list[Any] | None,
    sweep_option(
        "--threads",
        "-t",
        item=positive_int,
        what=COUNT,
        metavar="N[,N...]",
        help="numba threads (default: all cores)",
    ),
]
PromptTokensListOpt = Annotated[
    list[Any] | None,
    sweep_option(
        "--prompt-tokens",
        "-p",
        item=positive_int,
        what=COUNT,
        metavar="N[,N...]",
        help="Cycle or cut the prompt to exactly this many tokens (default: 32)",
    ),
]
TokensOpt = Annotated[
    list[Any] | None,
    sweep_option(
        "--tokens",
        "-n",
        item=positive_int,
        what=COUNT,
        metavar="N[,N...]",
        help="Tokens to generate per repetition (default: 128)",
    ),
]
OutputFormatOpt = Annotated[
    TableFormat | None,
    typer.Option(
        "--output-format",
        help="The summary table (a row per receipt) as md, csv, json or jsonl: on stdout instead of the "
        "report, or into --output (default: from its suffix).",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option("--output", dir_okay=False, help="Write the summary table to this file (atomically)."),
]
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
    model: ModelsOpt = None,
    preset: PresetOpt = DEFAULT_PRESET,
    fmt: FormatsOpt = None,
    arch: ArchOrDefaultOpt = None,
    model_seed: ModelSeedOpt = 0,
    tokens: TokensOpt = None,
    prompt: PromptOpt = None,
    prompt_tokens: PromptTokensListOpt = None,
    repetitions: Annotated[int, typer.Option("--repetitions", min=1, help="Measured repetitions.")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Unmeasured repetitions first.")] = 1,
    temperature: TemperatureOpt = 0.0,
    top_k: TopKOpt = 0,
    top_p: TopPOpt = 1.0,
    seed: SeedOpt = 0,
    threads: ThreadsListOpt = None,
    kernel: KernelsOpt = None,
    retune: RetuneOpt = False,
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
    sign_key: Annotated[
        Path | None,
        typer.Option(
            "--sign-key",
            help="Sign the receipt with this Ed25519 private key (bitnet-harness keygen): a DSSE-enveloped "
            "in-toto statement beside it, <receipt>.intoto.jsonl.",
        ),
    ] = None,
    output_format: OutputFormatOpt = None,
    output: OutputOpt = None,
    max_memory: MaxMemoryOpt = None,
    timeout: TimeoutOpt = None,
    summary_md: SummaryMdOpt = None,
) -> None:
    """Phase 3, the full benchmark: prefill and decode speed, time to first token, latency distribution.

    Load and JIT time are measured apart from the timed repetitions. The receipt is written atomically under
    --receipts-dir, verified, and reported. Comma lists sweep: one receipt per combination, then a summary.
    """
    request = _request(dict(locals()))
    table = _table_format(output_format, output, as_json)
    reports = Reports(None, summary_md)
    with resource_limits(max_memory, timeout):
        outcome = run_benchmark_session(request, ConsoleProgress())
        _present(outcome, table, output, as_json)
    reports.write(None, lambda: benchmark_markdown(_summary_receipts(outcome), outcome.comparison))
    raise typer.Exit(outcome.exit_code)


def _present(
    outcome: BenchmarkOutcome, table: TableFormat | None, output: Path | None, as_json: bool
) -> None:
    """The summary table into --output, then JSON, the table on stdout, or the report."""
    if output is not None and table is not None:
        _write_summary(outcome, table, output)
    if as_json:
        typer.echo(json.dumps(_json(outcome), indent=2))
    elif table is not None and output is None:
        typer.echo(frame_text(outcome.summary(), table.value, _title(outcome)), nl=False)
    else:
        _show(outcome)


_NOT_REQUEST_FIELDS = ("as_json", "max_memory", "timeout", "output_format", "output", "summary_md")
_AXIS_DEFAULTS = {f.name: f.default for f in fields(BenchmarkRequest) if f.name in SWEEP_AXES}


def _request(options: dict[str, Any]) -> BenchmarkRequest:
    """The command's parameters as a request (every one but the output options is a field of that name)."""
    given = {
        k: v.value if isinstance(v, Enum) else v for k, v in options.items() if k not in _NOT_REQUEST_FIELDS
    }
    given |= {axis: sweep_axis(given[axis], default) for axis, default in _AXIS_DEFAULTS.items()}
    given["threshold"] = given["threshold"] / 100.0
    return BenchmarkRequest(**given)


_SUFFIXES = {f".{f.value}": f for f in TableFormat}


def _table_format(chosen: TableFormat | None, output: Path | None, as_json: bool) -> TableFormat | None:
    """The summary table's format, checked before any work: --output-format, else --output's suffix."""
    if chosen is not None and output is None and as_json:
        raise HarnessError(
            "--json and --output-format both print to stdout; write the table with --output FILE"
        )
    if chosen is None and output is not None:
        chosen = _SUFFIXES.get(output.suffix.lower())
        if chosen is None:
            raise HarnessError(
                f"--output {output}: give --output-format md|csv|json|jsonl (or a file ending in one of them)"
            )
    return chosen


def _title(outcome: BenchmarkOutcome) -> str:
    n = len(outcome.receipts)
    return f"bitnet-harness benchmark: {n} receipt{'s' if n != 1 else ''}"


def _write_summary(outcome: BenchmarkOutcome, table: TableFormat, output: Path) -> None:
    """The summary table written atomically: a reader sees the previous file or the whole new one."""
    with atomic_write(output) as fh:
        fh.write(frame_text(outcome.summary(), table.value, _title(outcome)).encode("utf-8"))
    typer.echo(f"summary: {output}", err=True)


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
    if len(outcome.receipts) > 1 and not outcome.ab:  # a sweep: the receipts are in their files
        runs = [{"path": str(w.path), "verification": w.verification.to_dict()} for w in outcome.receipts]
        return {"receipts": runs, "summary": records(outcome.summary())}
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


def _show(outcome: BenchmarkOutcome) -> None:
    if len(outcome.receipts) > 1:
        for w in outcome.receipts:
            state = "verified" if w.verification.ok else "FAILED verification"
            typer.echo(f"receipt{' ' + w.side.name if w.side else ''}: {w.path} ({state})")
        if not outcome.ab:
            Console().print(rich_table(compact_frame(outcome.summary()), _title(outcome)))
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
