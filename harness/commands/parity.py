"""`bitnet-harness parity`: compare the engine with llama.cpp or transformers on one model.

Tokenizer (ids and detokenized text of a corpus), teacher-forced logits (cosine and top-5 overlap per
position) and greedy tokens from several prompts; the engine runs once per activation-quantization mode
(`block256` quantizes as llama.cpp does, `token` as bitnet.cpp, transformers' BitLinear and the benchmark
do). Without --model it compares on the `trained` preset (real weights: random ones are chaotic), in the
reference's architecture. With `--receipt` the `token` run's numbers go into a copy of that receipt's
`parity` section.
Exit 0 when the reference's matching mode passes, 1 when it does not, 2 on unusable input.
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
from engine.constants import ARCH_BITNET, ARCH_BITNET_B158
from engine.model import ACT_QUANT_MODES
from engine.trained import TRAINED_PRESET
from harness.commands.options import (
    DEFAULT_FORMAT,
    ArchChoice,
    FormatOpt,
    JsonOpt,
    KernelChoice,
    KernelOpt,
    LogitsChoice,
    ModelOpt,
    PresetChoice,
    PresetOpt,
    RetuneOpt,
    ThreadsOpt,
)
from harness.errors import HarnessError
from harness.peers.parity import (
    COSINE_MIN,
    GREEDY_STEPS,
    LOGIT_TOKENS,
    RECEIPT_MODE,
    REFERENCE_LLAMA_CPP,
    REFERENCE_TRANSFORMERS,
    REFERENCES,
    run_parity,
    write_receipt_copy,
)
from harness.phases.workload import model_file, resolve_model
from harness.session.model import check_retune

ReferenceChoice = Enum("ReferenceChoice", {name: name for name in REFERENCES}, type=str)
ActQuantChoice = Enum("ActQuantChoice", {m: m for m in (*ACT_QUANT_MODES, "both")}, type=str)
# The architecture each reference runs the preset in: llama.cpp has only the SiLU one.
REFERENCE_ARCH = {REFERENCE_LLAMA_CPP: ARCH_BITNET, REFERENCE_TRANSFORMERS: ARCH_BITNET_B158}
DEFAULT_REFERENCE = ReferenceChoice(REFERENCE_LLAMA_CPP)
DEFAULT_PRESET = PresetChoice(TRAINED_PRESET)
DEFAULT_ACT_QUANT = ActQuantChoice("both")
DEFAULT_LOGITS = LogitsChoice("f32")
DEFAULT_KERNEL = KernelChoice("auto")


ReferenceOpt = Annotated[
    ReferenceChoice, typer.Option("--reference", help="The implementation to compare with.")
]
PresetArchOpt = Annotated[
    ArchChoice | None,
    typer.Option("--arch", help="Preset architecture (default: the reference's; llama.cpp runs bitnet)."),
]
ActQuantOpt = Annotated[
    ActQuantChoice, typer.Option("--act-quant", help="Engine activation quantization: block256, token, both.")
]
ReceiptOpt = Annotated[
    Path | None,
    typer.Option("--receipt", help="A receipt of this model: write <receipt>.parity.json with the results."),
]


def register(app: typer.Typer) -> None:
    """Add `parity` to the top-level app."""
    app.command("parity")(parity_command)


def _row(label: str, tokenizer: str, lg: dict[str, Any], greedy: str, ok: str) -> list[str]:
    return [
        label,
        tokenizer,
        f"{lg['min_cosine']:.9f}",
        f"{lg['mean_top5_overlap']:.3f}",
        f"{lg['top1_agreement']:.3f}",
        f"{lg['max_abs_logit_error']:.4g}",
        greedy,
        ok,
    ]


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
    steps = report["runs"][0]["greedy"]["steps"]
    for run in report["runs"]:
        matched = sum(r["match"] for r in run["greedy"]["runs"])
        label = f"{run['engine']['act_quant']} / logits {run['engine']['logits']}"
        if run["engine"]["act_quant"] == report["matching_mode"]:
            label += " (judged)"
        tokenizer = f"{tok['ids_identical']}/{n} ids, {tok['detokenized_identical']}/{n} text"
        greedy = f"{matched}/{len(run['greedy']['runs'])} x {steps} tokens"
        table.add_row(*_row(label, tokenizer, run["logits"], greedy, "yes" if run["passed"] else "no"))
    for own in report["reference_checks"]:
        label = f"{report['reference_kind']} vs itself: {own['schedule']} (noise floor)"
        greedy = f"{own['greedy_matching']}/{own['greedy_runs']} x {steps} tokens"
        table.add_row(*_row(label, "", own["logits"], greedy, ""))
    return table


def _print_report(report: dict[str, Any], console: Console) -> None:
    model = report["model"]
    console.print(f"model: {model['source']} ({model['architecture']}, {model['format']})")
    if model["converted"]:
        console.print(f"compared on {model['compared_file']}: " + "; ".join(model["changes"]))
    console.print(_summary_table(report))
    m = report["reference_margins"]
    console.print(
        f"reference top-1 margin (top-1 minus top-2 logit): median {m['median_top1_margin_positions']:.3g} "
        f"over the sequence, median {m['median_top1_margin_greedy']:.3g} and smallest "
        f"{m['min_top1_margin_greedy']:.3g} over the greedy steps"
    )
    for run in report["runs"]:
        for note in run["explanations"]:
            console.print(escape(f"[{run['engine']['act_quant']}] {note}"))
    verdict = "PASS" if report["passed"] else "FAIL"
    console.print(
        f"{verdict}: {report['matching_mode']} mode needs 100 % tokenizer agreement, every greedy token "
        f"equal and cosine >= {COSINE_MIN} at every position"
    )


def preset_model(reference: str, preset: str, fmt: str, arch: str | None) -> Path:
    """The preset's file in `arch`, by default in the architecture the reference runs."""
    return resolve_model(None, preset, fmt, arch or REFERENCE_ARCH[reference], 0).path


def write_json(out: Path, report: dict[str, Any]) -> None:
    """The whole report as indented JSON, written atomically."""
    with atomic_write(out) as fh:
        fh.write(json.dumps(report, indent=2, ensure_ascii=False).encode("utf-8") + b"\n")


def parity_command(
    model: ModelOpt = None,
    reference: ReferenceOpt = DEFAULT_REFERENCE,
    preset: PresetOpt = DEFAULT_PRESET,
    fmt: FormatOpt = DEFAULT_FORMAT,
    arch: PresetArchOpt = None,
    act_quant: ActQuantOpt = DEFAULT_ACT_QUANT,
    logits: Annotated[
        LogitsChoice, typer.Option("--logits", help="Engine logits path (f32 is closest to the references).")
    ] = DEFAULT_LOGITS,
    tokens: Annotated[
        int, typer.Option("--tokens", min=2, help="Teacher-forced sequence length for the logits.")
    ] = LOGIT_TOKENS,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Greedy steps per prompt.")] = GREEDY_STEPS,
    threads: ThreadsOpt = None,
    kernel: KernelOpt = DEFAULT_KERNEL,
    retune: RetuneOpt = False,
    receipt: ReceiptOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="Also write the full JSON report here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare tokenizer, logits and greedy tokens with a reference; say where and why they differ."""
    modes = ACT_QUANT_MODES if act_quant.value == "both" else (act_quant.value,)
    check_retune(retune, [kernel.value])
    if receipt is not None and RECEIPT_MODE not in modes:
        raise HarnessError(
            f"--receipt records the {RECEIPT_MODE!r} run (the benchmark's); add it to --act-quant"
        )
    model = model or preset_model(reference.value, preset.value, fmt.value, arch.value if arch else None)
    report = run_parity(
        model,
        reference=reference.value,
        act_quants=modes,
        logits=logits.value,
        logit_tokens=tokens,
        greedy_steps=steps,
        threads=threads,
        kernel=kernel.value,
        retune=retune,
    )
    if out is not None:
        write_json(out, report)
    written = write_receipt_copy(receipt, model_file(model), report) if receipt is not None else None
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False))
    else:
        _print_report(report, Console())
        if written is not None:
            typer.echo(f"receipt with parity section: {written}")
    raise typer.Exit(0 if report["passed"] else 1)
