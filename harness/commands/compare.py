"""`compare`: the regression gate between two receipts.

Both receipts must pass verification first (self-consistent level): one that fails is refused with one line
naming its failing gate, exit 2. Exit codes: 0 no regression, 1 regression, 2 error, not comparable or not
verified, 3 inconclusive (also when a receipt's own verification calls its speed unreliable).
"""

from typing import Annotated

import typer

from harness.commands.options import ArchiveOpt, JunitOpt, OutputFormatOpt, SummaryMdOpt, ThresholdOpt
from harness.commands.render import Reports, render_comparison
from harness.comparison import archive
from harness.comparison.compare import (
    EXIT_ERROR,
    EXIT_OK,
    REASON_KEYS,
    Comparison,
    comparability,
    compare,
    require_verified,
)
from harness.comparison.stats import ALPHA, THRESHOLD
from harness.comparison.tables import OutputFormat
from harness.errors import HarnessError
from harness.reporting.junit import comparison_junit
from harness.reporting.summary import comparability_markdown, comparison_markdown

AlphaOpt = Annotated[float, typer.Option("--alpha", help="Significance level of the Mann-Whitney test.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Compare a non-comparable pair (reasons still shown).")
]
IgnoreOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--ignore",
        help=f"Skip one comparability check (repeatable): {', '.join(REASON_KEYS)}; or 'noise': judge the "
        "timings of a receipt marked noisy instead of calling them inconclusive.",
    ),
]


def register(app: typer.Typer) -> None:
    """Add `compare` to the top-level app."""
    app.command("compare")(compare_cmd)


_SELECTORS = (
    "a path, latest, latest~N, commit prefix, YYYY-MM-DD; a comma list for several runs of one configuration "
    "(their spread then enters the intervals)"
)
BaseArg = Annotated[str, typer.Argument(help=f"BASE receipt(s): {_SELECTORS}.")]
NewArg = Annotated[str, typer.Argument(help=f"NEW receipt(s): {_SELECTORS}.")]


def compare_cmd(
    base: BaseArg,
    new: NewArg,
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE,
    threshold: ThresholdOpt = THRESHOLD * 100,
    alpha: AlphaOpt = ALPHA,
    force: ForceOpt = False,
    ignore: IgnoreOpt = None,
    comparability_only: Annotated[
        bool,
        typer.Option(
            "--comparability-only",
            help="Judge only comparability and honesty (both verify, same model, workload and generated "
            "tokens), not speed: exit 0 or 2. For CI against a baseline from another machine.",
        ),
    ] = False,
    fmt: OutputFormatOpt = OutputFormat.rich,
    junit: JunitOpt = None,
    summary_md: SummaryMdOpt = None,
) -> None:
    """Compare two receipts metric by metric: medians, NEW/BASE with a bootstrap 95 % interval, Mann-Whitney
    p-value and a verdict that needs both significance and a change beyond --threshold.

    Exit 0 no regression, 1 regression, 2 error or not comparable, 3 inconclusive. --junit FILE writes one
    JUnit test case per metric; with $GITHUB_STEP_SUMMARY set (or --summary-md FILE) a markdown summary,
    regressions first, is appended.
    """
    reports = Reports(junit, summary_md)
    base_sels, new_sels = _side(base, archive_dir), _side(new, archive_dir)
    base_sel, new_sel = base_sels[0], new_sels[0]
    base_r, new_r = base_sel.receipt, new_sel.receipt
    sides = (("BASE", base_sel), ("NEW", new_sel))
    base_v, new_v = (require_verified(s.receipt, f"{side} {s.location}") for side, s in sides)
    verified = (base_v, new_v)
    base_label, new_label = (",".join(s.location for s in sels) for sels in (base_sels, new_sels))
    if comparability_only:
        reasons = comparability(base_r, new_r, ignore or (), same_output=True, verified=verified)
        for reason in reasons:
            typer.echo(f"not comparable ({reason.key}): {reason.message}", err=True)
        skipped = f" (not checked: {', '.join(ignore)})" if ignore else ""
        verdict = "not comparable" if reasons else f"comparable and verified{skipped}"
        if not reasons:
            typer.echo(f"comparable and verified: {new_sel.location} against {base_sel.location}{skipped}")
        only = Comparison(base_sel.location, new_sel.location, threshold / 100.0, alpha, reasons)
        reports.write(lambda: comparison_junit(only), lambda: comparability_markdown(only, verdict))
        raise typer.Exit(EXIT_ERROR if reasons else EXIT_OK)
    comp = compare(
        [s.receipt for s in base_sels],
        [s.receipt for s in new_sels],
        base_label=base_label,
        new_label=new_label,
        threshold=threshold / 100.0,
        alpha=alpha,
        force=force,
        ignore=ignore or (),
        verified=verified,
    )
    render_comparison(comp, fmt)
    reports.write(lambda: comparison_junit(comp), lambda: f"### compare\n\n{comparison_markdown(comp)}")
    raise typer.Exit(comp.exit_code)


def _side(selectors: str, archive_dir: archive.Where) -> list[archive.Selected]:
    """One side's receipts: each selector of a comma list resolved (several runs of one configuration)."""
    parts = [part.strip() for part in selectors.split(",")]
    if not all(parts):
        raise HarnessError(f"empty selector in {selectors!r}")
    return [archive.resolve(part, archive_dir) for part in parts]
