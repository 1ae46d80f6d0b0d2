"""`archive list|add|prune`, `compare` and `history`: the receipt archive, the regression gate, the trend.

`compare` exit codes: 0 no regression, 1 regression, 2 error or not comparable, 3 inconclusive.
"""

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.text import Text

from harness.comparison import archive, history
from harness.comparison.compare import EXIT_ERROR, EXIT_OK, REASON_KEYS, Comparison, comparability, compare
from harness.comparison.metrics import BY_KEY, metric
from harness.comparison.stats import ALPHA, THRESHOLD
from harness.comparison.tables import OutputFormat, cell, dumps, markdown, records, rich_table
from harness.errors import HarnessError

ArchiveOpt = Annotated[
    Path, typer.Option("--archive", help="Archive folder (top-level *.json receipts).", file_okay=False)
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="rich table, md (markdown), csv or json.")]
ThresholdOpt = Annotated[
    float, typer.Option("--threshold", min=0.0, help="Smallest change in percent that counts (default 5).")
]
AlphaOpt = Annotated[float, typer.Option("--alpha", help="Significance level of the Mann-Whitney test.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Compare a non-comparable pair (reasons still shown).")
]
IgnoreOpt = Annotated[
    list[str] | None,
    typer.Option("--ignore", help=f"Skip one comparability check (repeatable): {', '.join(REASON_KEYS)}."),
]


def register(app: typer.Typer) -> None:
    """Add the `archive` group and the `compare` and `history` commands to the top-level app."""
    group = typer.Typer(help="List, add and prune archived receipts.", no_args_is_help=True)
    group.command("list")(archive_list)
    group.command("add")(archive_add)
    group.command("prune")(archive_prune)
    app.add_typer(group, name="archive")
    app.command("compare")(compare_cmd)
    app.command("history")(history_cmd)


def _emit(frame: pd.DataFrame, fmt: OutputFormat, title: str) -> None:
    if fmt is OutputFormat.json:
        typer.echo(dumps(records(frame)))
    elif fmt is OutputFormat.csv:
        typer.echo(frame.to_csv(index=False), nl=False)
    elif fmt is OutputFormat.md:
        typer.echo(f"**{title}**\n\n{markdown(frame)}")
    else:
        Console().print(rich_table(frame, title))


def archive_list(
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE, fmt: FormatOpt = OutputFormat.rich
) -> None:
    """The archived receipts, oldest first: date, commit, model, threads, decode and prefill tok/s (medians
    of the per-repetition samples) and whether each still passes verification."""
    frame = archive.table(archive.scan(archive_dir))
    _emit(frame, fmt, f"{len(frame)} receipts in {archive_dir}")


def archive_add(
    receipt: Annotated[Path, typer.Argument(help="Receipt file to validate and copy in.")],
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE,
) -> None:
    """Validate a receipt (schema and every honesty gate) and copy it into the archive under its canonical
    name; an archived file is never overwritten."""
    target, copied = archive.add(receipt, archive_dir)
    typer.echo(f"archived: {target}" if copied else f"already archived: {target}")


def archive_prune(
    keep: Annotated[int, typer.Option("--keep", min=1, help="Receipts to keep (the newest).")],
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
) -> None:
    """Delete the oldest archived receipts beyond the newest N; baseline/ and phases/ are never touched."""
    doomed = archive.prune_plan(archive_dir, keep) if dry_run else archive.prune(archive_dir, keep)
    verb = "would delete" if dry_run else "deleted"
    for path in doomed:
        typer.echo(f"{verb}: {path}")
    typer.echo(f"{verb} {len(doomed)} receipts; kept the newest {keep}")


def _fmt_value(value: float | None, unit: str) -> str:
    if value is None or value != value:
        return "-"
    if unit == "s":
        return f"{value * 1e3:.4g} ms"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    return f"{value:.4g}"


def comparison_frame(comp: Comparison) -> pd.DataFrame:
    """The human table: values in readable units, ratio with its 95 % interval, p-value, verdict."""
    rows = []
    for row in comp.rows:
        j, m = row.judgement, row.metric
        ci = f"[{j.ci_low:.3f}, {j.ci_high:.3f}]" if j.ci_low is not None and j.ci_high is not None else "-"
        rows.append(
            {
                "metric": f"{m.label} {'↑' if m.higher_is_better else '↓'}",
                "n": f"{j.n_base}/{j.n_new}",
                "BASE": _fmt_value(j.base, m.unit),
                "NEW": _fmt_value(j.new, m.unit),
                "NEW/BASE": cell(j.ratio if j.ratio == j.ratio else None),
                "95% CI": ci,
                "p": "-" if j.p_value is None else f"{j.p_value:.3g}",
                "verdict": j.verdict.value,
            }
        )
    geo = "-" if comp.geomean is None else f"{comp.geomean:.4g}"
    rows.append({"metric": "geomean speed-up ↑", "NEW/BASE": geo, "verdict": ""})
    return pd.DataFrame(rows).fillna("")


def _header(comp: Comparison, sep: str = "\n") -> str:
    forced = " (forced: not comparable)" if comp.forced and comp.reasons else ""
    return sep.join(
        [
            f"BASE {comp.base_label}",
            f"NEW  {comp.new_label}",
            f"medians (latency: percentiles), ↑/↓ better; threshold {comp.threshold * 100:g} %, "
            f"alpha {comp.alpha:g}{forced}",
        ]
    )


def render_comparison(comp: Comparison, fmt: OutputFormat, console: Console | None = None) -> None:
    """Print a comparison in the chosen format; refusal reasons go with it (stderr for the table formats)."""
    console = console or Console()
    err = Console(stderr=True)
    if fmt is OutputFormat.json:
        typer.echo(dumps(comp.to_dict()))
        return
    for reason in comp.reasons:
        err.print(Text(f"not comparable ({reason.key}): {reason.message}"))
    if comp.refused:
        err.print(Text("refusing to compare; --force compares anyway, --ignore KEY skips one check"))
        return
    if fmt is OutputFormat.csv:
        typer.echo(comp.frame().to_csv(index=False), nl=False)
        return
    notes = [*comp.notes]
    if fmt is OutputFormat.md:
        head = f"**Verdict: {comp.overall}**<br>{_header(comp, '<br>')}"
        lines = [head, "", markdown(comparison_frame(comp))]
        lines += ["", *(f"- {n}" for n in notes)] if notes else []
        typer.echo("\n".join(lines))
        return
    console.print(rich_table(comparison_frame(comp), _header(comp)))
    for note in notes:
        console.print(Text(f"note: {note}"))
    console.print(Text(f"verdict: {comp.overall}"))


def compare_cmd(
    base: Annotated[
        str, typer.Argument(help="BASE receipt: a path, latest, latest~N, commit prefix, YYYY-MM-DD.")
    ],
    new: Annotated[str, typer.Argument(help="NEW receipt, the same kinds of selector.")],
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
    fmt: FormatOpt = OutputFormat.rich,
) -> None:
    """Compare two receipts metric by metric: medians, NEW/BASE with a bootstrap 95 % interval, Mann-Whitney
    p-value and a verdict that needs both significance and a change beyond --threshold.

    Exit 0 no regression, 1 regression, 2 error or not comparable, 3 inconclusive.
    """
    base_path, new_path = archive.resolve(base, archive_dir), archive.resolve(new, archive_dir)
    base_r, new_r = archive.load_checked(base_path), archive.load_checked(new_path)
    if comparability_only:
        reasons = comparability(base_r, new_r, ignore or (), same_output=True)
        for reason in reasons:
            typer.echo(f"not comparable ({reason.key}): {reason.message}", err=True)
        if not reasons:
            skipped = f" (not checked: {', '.join(ignore)})" if ignore else ""
            typer.echo(f"comparable and verified: {new_path} against {base_path}{skipped}")
        raise typer.Exit(EXIT_ERROR if reasons else EXIT_OK)
    comp = compare(
        base_r,
        new_r,
        base_label=str(base_path),
        new_label=str(new_path),
        threshold=threshold / 100.0,
        alpha=alpha,
        force=force,
        ignore=ignore or (),
    )
    render_comparison(comp, fmt)
    raise typer.Exit(comp.exit_code)


def history_cmd(
    metric_key: Annotated[
        str, typer.Option("--metric", help=f"One of: {', '.join(BY_KEY)}.")
    ] = "decode_tok_s",
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE,
    model: Annotated[
        str | None, typer.Option("--model", help="Only this model (preset or file stem).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="Only runs with this many threads.")
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", help="Also write a .png or .svg chart (needs the plot extra).")
    ] = None,
    fmt: FormatOpt = OutputFormat.rich,
) -> None:
    """A metric over the archive by date and commit with each receipt's noise band, as a table and a chart
    (a terminal chart; PNG/SVG with --chart when matplotlib is installed)."""
    m = metric(metric_key)
    table = history.frame(archive.usable(archive_dir), m, model=model, threads=threads)
    if table.empty:
        raise HarnessError(f"no receipt in {archive_dir} has {m.label} samples (after the filters)")
    if chart is not None:
        written = history.write_chart(table, m, chart)
        typer.echo(f"chart: {written}", err=True)
    _emit(table, fmt, f"{m.label} over {archive_dir}")
    if fmt is OutputFormat.rich:
        for line in history.terminal_chart(table, m):
            Console().print(Text(line))
