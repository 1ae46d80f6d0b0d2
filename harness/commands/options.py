"""Command-line options shared by several commands, defined once."""

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from engine.constants import ARCHITECTURES, WEIGHT_FORMATS
from engine.model import KERNEL_MODES, LOGITS_MODES
from engine.presets import PRESETS
from harness.comparison.tables import OutputFormat

# Typer turns str Enums into choices: a bad value is a usage error (exit 2) that lists the choices.
KernelChoice = Enum("KernelChoice", {name: name for name in KERNEL_MODES}, type=str)
LogitsChoice = Enum("LogitsChoice", {name: name for name in LOGITS_MODES}, type=str)
PresetChoice = Enum("PresetChoice", {name: name for name in PRESETS}, type=str)
FormatChoice = Enum("FormatChoice", {name: name for name in WEIGHT_FORMATS}, type=str)
ArchChoice = Enum("ArchChoice", {name: name for name in ARCHITECTURES}, type=str)
DEFAULT_PRESET = PresetChoice("2b-4t")
DEFAULT_FORMAT = FormatChoice("i2s")
DEFAULT_ARCH = ArchChoice("bitnet-b1.58")
DEFAULT_KERNEL = KernelChoice("auto")

ModelOpt = Annotated[
    Path | None,
    typer.Option("--model", help="GGUF file or Hugging Face BitNet folder (default: the --preset model)."),
]
PresetOpt = Annotated[PresetChoice, typer.Option("--preset", help="Preset model used without --model.")]
FormatOpt = Annotated[FormatChoice, typer.Option("--format", help="Weight format of the preset model.")]
ArchOpt = Annotated[ArchChoice, typer.Option("--arch", help="Architecture of the preset model.")]
ModelSeedOpt = Annotated[
    int, typer.Option("--model-seed", min=0, help="Seed the preset model is written with.")
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", min=1, help="numba threads (default: all cores).")
]
KernelOpt = Annotated[
    KernelChoice, typer.Option("--kernel", help="Ternary kernel family; auto times each on this CPU.")
]
RetuneOpt = Annotated[
    bool,
    typer.Option(
        "--retune",
        help="With --kernel auto: time the kernel families (and the AVX2 prefetch distances) again instead "
        "of using this machine's cached choice, and cache the new one.",
    ),
]
StrictOpt = Annotated[bool, typer.Option("--strict-loader", help="Accept only exact tensor sizes.")]
PromptOpt = Annotated[
    str | None, typer.Option("--prompt", help="Prompt text (default: a built-in sentence).")
]
PromptTokensOpt = Annotated[
    int | None,
    typer.Option("--prompt-tokens", min=1, help="Cycle or cut the prompt to exactly this many tokens."),
]
TemperatureOpt = Annotated[float, typer.Option("--temperature", min=0.0, help="0 = greedy.")]
TopKOpt = Annotated[int, typer.Option("--top-k", min=0, help="Keep the k likeliest tokens (0 = all).")]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Nucleus probability mass, in (0, 1].")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Sampling seed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
PhaseReceiptsDirOpt = Annotated[
    Path | None,
    typer.Option("--receipts-dir", help="Also write the phase's receipt here (verified like a benchmark's)."),
]
ReceiptsDirOpt = Annotated[Path, typer.Option("--receipts-dir", help="Folder receipts are written into.")]
MaxMemoryOpt = Annotated[
    int | None,
    typer.Option("--max-memory", min=1, help="Stop with an error when resident memory passes this many MB."),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option("--timeout", min=0.001, help="Stop with an error after this many seconds."),
]
ArchiveOpt = Annotated[
    str,
    typer.Option(
        "--archive",
        help="Archive: a folder (its top-level *.json receipts) or an fsspec URL such as s3://bucket/prefix "
        "(extra archive-s3).",
    ),
]
OutputFormatOpt = Annotated[
    OutputFormat, typer.Option("--format", help="rich table, md (markdown), csv or json.")
]
ThresholdOpt = Annotated[
    float, typer.Option("--threshold", min=0.0, help="Smallest change in percent that counts (default 5).")
]
JunitOpt = Annotated[
    Path | None,
    typer.Option("--junit", help="Also write the result as JUnit XML to this file.", dir_okay=False),
]
SummaryMdOpt = Annotated[
    Path | None,
    typer.Option(
        "--summary-md",
        help="Append a markdown summary to this file (done anyway to $GITHUB_STEP_SUMMARY when it is set).",
        dir_okay=False,
    ),
]


T = TypeVar("T")


def comma_list(item: Callable[[str], T], what: str) -> Callable[[str], tuple[T, ...]]:
    """The parser of a sweep option's value `A,B,C`, each item through `item` (ValueError: not `what`)."""

    def parse(text: str) -> tuple[T, ...]:
        out = []
        for part in text.split(","):
            try:
                out.append(item(part.strip()))
            except ValueError:
                raise typer.BadParameter(f"{part.strip()!r} in {text!r} is not {what}") from None
        return tuple(out)

    return parse


def sweep_option(*names: str, item: Callable[[str], Any], what: str, metavar: str, help: str) -> Any:
    """A `benchmark` option that takes a comma list (or repeats) of `item`s: a sweep axis."""
    return typer.Option(
        *names,
        parser=comma_list(item, what),
        metavar=metavar,
        help=f"{help}; a comma list (or the option repeated) sweeps.",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return check


def sweep_axis(values: list[Any] | None, default: Any) -> Any:
    """A sweep option's values (every occurrence, each a tuple), flattened: the default when not given, the
    value itself when there is one, else the tuple a sweep runs over."""
    if not values:
        return default
    flat = tuple(v for group in values for v in group)
    return flat[0] if len(flat) == 1 else flat


def strict_flag(strict_loader: bool) -> bool | None:
    """--strict-loader forces strict mode; without it BITNET_STRICT_MODE decides."""
    return True if strict_loader else None
