"""`bitnet-harness parity`: compare the engine with upstream llama.cpp on one model file.

Tokenizer (ids and detokenized text of a corpus), teacher-forced logits (cosine and top-5 overlap per
position) and greedy tokens from several prompts; the engine runs once per activation-quantization mode
(`block256` matches llama.cpp, `token` is bitnet.cpp's and the benchmark's). With `--receipt` the `token`
run's numbers go into a copy of that receipt's `parity` section, which `verify-receipt` shows.
Exit 0 when the llama.cpp-matching mode passes, 1 when it does not, 2 on unusable input.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.atomic import atomic_write
from engine.model import ACT_QUANT_MODES
from harness.commands.options import JsonOpt, KernelChoice, KernelOpt, LogitsChoice, RetuneOpt, ThreadsOpt
from harness.errors import HarnessError
from harness.peers.parity import (
    COSINE_MIN,
    GREEDY_STEPS,
    LOGIT_TOKENS,
    RECEIPT_MODE,
    REFERENCE_LLAMA_CPP,
    run_parity,
    write_receipt_copy,
)
from harness.session.model import check_retune

ReferenceChoice = Enum("ReferenceChoice", {REFERENCE_LLAMA_CPP: REFERENCE_LLAMA_CPP}, type=str)
ActQuantChoice = Enum("ActQuantChoice", {m: m for m in (*ACT_QUANT_MODES, "both")}, type=str)
DEFAULT_REFERENCE = ReferenceChoice(REFERENCE_LLAMA_CPP)
DEFAULT_ACT_QUANT = ActQuantChoice("both")
DEFAULT_LOGITS = LogitsChoice("f32")
DEFAULT_KERNEL = KernelChoice("auto")


def register(app: typer.Typer) -> None:
    """Add `parity` to the top-level app."""
    app.command("parity")(parity_command)


def _summary_table(report: dict[str, Any]) -> Table:
    tok = report["tokenizer"]
    n = tok["strings"]
    table = Table(title=f"Parity with {report['reference']}")
    for col in (
        "engine mode",
        "tokenizer",
        "min cosine",
        "top-5 overlap",
        "top-1",
        "max |err|",
        "greedy",
        "ok",
    ):
        table.add_column(col)
    for run in report["runs"]:
        lg, gr = run["logits"], run["greedy"]
        matched = sum(r["match"] for r in gr["runs"])
        table.add_row(
            f"{run['engine']['act_quant']} / logits {run['engine']['logits']}",
            f"{tok['ids_identical']}/{n} ids, {tok['detokenized_identical']}/{n} text",
            f"{lg['min_cosine']:.9f}",
            f"{lg['mean_top5_overlap']:.3f}",
            f"{lg['top1_agreement']:.3f}",
            f"{lg['max_abs_logit_error']:.4g}",
            f"{matched}/{len(gr['runs'])} x {gr['steps']} tokens",
            "yes" if run["passed"] else "no",
        )
    own = report["reference_self_check"]
    table.add_row(
        "llama.cpp vs itself, token by token (noise floor)",
        "",
        f"{own['logits']['min_cosine']:.9f}",
        f"{own['logits']['mean_top5_overlap']:.3f}",
        f"{own['logits']['top1_agreement']:.3f}",
        f"{own['logits']['max_abs_logit_error']:.4g}",
        f"{own['greedy_matching']}/{own['greedy_runs']} x {report['runs'][0]['greedy']['steps']} tokens",
        "",
    )
    return table


def _print_report(report: dict[str, Any], console: Console) -> None:
    model = report["model"]
    console.print(f"model: {model['source']} ({model['architecture']}, {model['format']})")
    if model["converted"]:
        console.print(f"compared on {model['compared_file']}: " + "; ".join(model["changes"]))
    console.print(_summary_table(report))
    for run in report["runs"]:
        for note in run["explanations"]:
            console.print(escape(f"[{run['engine']['act_quant']}] {note}"))
    verdict = "PASS" if report["passed"] else "FAIL"
    console.print(
        f"{verdict}: block256 mode needs 100 % tokenizer agreement, every greedy token equal and cosine >= "
        f"{COSINE_MIN} at every position"
    )


def parity_command(
    model: Annotated[Path, typer.Option("--model", help="A bitnet-architecture TQ2_0/TQ1_0 (or i2s) GGUF.")],
    reference: Annotated[
        ReferenceChoice, typer.Option("--reference", help="The peer implementation.")
    ] = DEFAULT_REFERENCE,
    act_quant: Annotated[
        ActQuantChoice,
        typer.Option(
            "--act-quant", help="Engine activation quantization: block256 (llama.cpp's), token, both."
        ),
    ] = DEFAULT_ACT_QUANT,
    logits: Annotated[
        LogitsChoice, typer.Option("--logits", help="Engine logits path (f32 is closest to llama.cpp's F16).")
    ] = DEFAULT_LOGITS,
    tokens: Annotated[
        int, typer.Option("--tokens", min=2, help="Teacher-forced sequence length for the logits.")
    ] = LOGIT_TOKENS,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Greedy steps per prompt.")] = GREEDY_STEPS,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    retune: RetuneOpt = False,
    receipt: Annotated[
        Path | None,
        typer.Option(
            "--receipt", help="A receipt of this model: write <receipt>.parity.json with the results."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the full JSON report here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare tokenizer, logits and greedy tokens with llama.cpp; say where and why they differ."""
    del reference  # one choice today; the option names the peer in the command line and the report
    modes = ACT_QUANT_MODES if act_quant.value == "both" else (act_quant.value,)
    check_retune(retune, [kernel.value])
    if receipt is not None and RECEIPT_MODE not in modes:
        raise HarnessError(
            f"--receipt records the {RECEIPT_MODE!r} run (the benchmark's path); add it to --act-quant"
        )
    report = run_parity(
        model,
        act_quants=modes,
        logits=logits.value,
        logit_tokens=tokens,
        greedy_steps=steps,
        threads=threads,
        kernel=kernel.value,
        retune=retune,
    )
    if out is not None:
        with atomic_write(out) as fh:
            fh.write(json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")
    written = write_receipt_copy(receipt, model, report) if receipt is not None else None
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))
    else:
        _print_report(report, Console())
        if written is not None:
            typer.echo(f"receipt with parity section: {written}")
    raise typer.Exit(0 if report["passed"] else 1)
