"""`archive list|add|prune`: the folder of archived receipts that `compare` and `history` read."""

from pathlib import Path
from typing import Annotated

import typer

from harness.commands.options import ArchiveOpt, OutputFormatOpt
from harness.commands.render import emit_frame
from harness.comparison import archive
from harness.comparison.tables import OutputFormat


def register(app: typer.Typer) -> None:
    """Add the `archive` group to the top-level app."""
    group = typer.Typer(help="List, add and prune archived receipts.", no_args_is_help=True)
    group.command("list")(archive_list)
    group.command("add")(archive_add)
    group.command("prune")(archive_prune)
    group.command("machines")(archive_machines)
    app.add_typer(group, name="archive")


def archive_list(
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE, fmt: OutputFormatOpt = OutputFormat.rich
) -> None:
    """The archived receipts, oldest first: date, commit, model, threads, decode and prefill tok/s (medians
    of the per-repetition samples) and whether each still passes verification."""
    frame = archive.table(archive.scan(archive_dir))
    emit_frame(frame, fmt, f"{len(frame)} receipts in {archive_dir}")


def archive_machines(
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE, fmt: OutputFormatOpt = OutputFormat.rich
) -> None:
    """The machines in the archive, one row per host fingerprint (CPU model, cores, instruction-set flags,
    memory): the ids `history --machine` takes."""
    frame = archive.machines(archive.scan(archive_dir))
    emit_frame(frame, fmt, f"{len(frame)} machines in {archive_dir}")


def archive_add(
    receipt: Annotated[Path, typer.Argument(help="Receipt file to validate and copy in.")],
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE,
) -> None:
    """Validate a receipt (schema and every honesty gate) and store it in the archive under its canonical
    name; an archived receipt is never replaced (a name taken by another receipt gets a _2, _3... suffix)."""
    target, copied = archive.add(receipt, archive_dir)
    typer.echo(f"archived: {target}" if copied else f"already archived: {target}")


def archive_prune(
    keep: Annotated[int, typer.Option("--keep", min=1, help="Receipts to keep (the newest).")],
    archive_dir: ArchiveOpt = archive.DEFAULT_ARCHIVE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
) -> None:
    """Delete the oldest archived receipts beyond the newest N; subfolders (baseline/) are never touched."""
    doomed = archive.prune_plan(archive_dir, keep) if dry_run else archive.prune(archive_dir, keep)
    verb = "would delete" if dry_run else "deleted"
    for entry in doomed:
        typer.echo(f"{verb}: {entry.location}")
    typer.echo(f"{verb} {len(doomed)} receipts; kept the newest {keep}")
