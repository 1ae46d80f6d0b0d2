"""The `bitnet-harness` command: one typer app; each module of harness.commands adds its command.

Usage errors (a bad option value, a missing argument, an unknown option or command, an option given twice) are
one `error:` line and exit 2 like every other bad input: the root group renders them, so the console script
and typer's test runner show the same line. `--help` and `--version` work as click has them.
"""

import sys
from collections import Counter
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from engine.errors import EngineError
from harness.errors import HarnessError
from harness.runtime import interrupts
from harness.version import harness_version

EXIT_USAGE = 2
EXIT_ABORTED = 1


def usage_line(exc: typer.TyperException) -> str:
    """Click's message as one line with the command's --help beside it: `error: invalid value for ...`."""
    text = " ".join(exc.format_message().split()).replace(": Value error, ", ": ").rstrip(".")
    text = text[:1].lower() + text[1:]
    ctx = getattr(exc, "ctx", None)
    return f"error: {text}" + (f"; see {ctx.command_path} --help" if ctx is not None else "")


class OneLineUsageErrors(TyperGroup):
    """The root group: click's usage errors as one line (usage_line), exit codes unchanged."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as exc:  # click's exceptions inside typer
            if type(exc).__name__ == "NoArgsIsHelpError":  # no arguments: typer has printed the help
                if exc.format_message().strip():  # (rich prints it; plain click returns it)
                    typer.echo(exc.format_message())
            else:
                typer.echo(usage_line(exc), err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = EXIT_ABORTED
        code = code if isinstance(code, int) else 0  # a command that returns normally exits 0
        if standalone_mode:
            sys.exit(code)
        return code


class OneValueCommand(TyperCommand):
    """A command whose single-value options refuse to be given twice: `--repetitions 3 --repetitions 5`
    is an error, never the last one silently winning. List options (`multiple`) take every occurrence."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        order = self.make_parser(ctx).parse_args(args=list(args))[2]
        for param, times in Counter(order).items():
            single = param.param_type_name == "option" and not param.multiple and not param.count
            if times > 1 and single and not param.is_eager and not ctx.resilient_parsing:
                names = "/".join([*param.opts, *param.secondary_opts])
                ctx.fail(f"{names} is given {times} times; give it once")
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=OneLineUsageErrors,
    name="bitnet-harness",
    help="Run BitNet b1.58 ternary models on the CPU and write verifiable benchmark receipts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bitnet-harness {harness_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version_: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Run BitNet b1.58 ternary models on the CPU and write verifiable benchmark receipts."""


model_app = typer.Typer(help="Write and inspect GGUF model files.", no_args_is_help=True)
app.add_typer(model_app, name="model")


def _register_commands() -> None:
    """Each command module adds its commands; the module list is the whole command surface."""
    from harness.commands import (
        archive,
        bench_kernels,
        benchmark,
        compare,
        history,
        keygen,
        model_convert,
        model_inspect,
        model_synth,
        parity,
        probe,
        report,
        run,
        timing,
        verify_receipt,
    )

    for module in (model_inspect, model_synth, model_convert):
        module.register(model_app)
    for module in (
        probe,
        timing,
        benchmark,
        run,
        verify_receipt,
        keygen,
        report,
        archive,
        compare,
        history,
        parity,
        bench_kernels,
    ):
        module.register(app)
    _one_value_options(app)


def _one_value_options(group: typer.Typer) -> None:
    """Every command of the app and its sub-groups parses with OneValueCommand."""
    for info in group.registered_commands:
        if info.cls in (None, TyperCommand):  # typer's default class, not one a command chose
            info.cls = OneValueCommand
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _one_value_options(sub.typer_instance)


_register_commands()


def main() -> None:
    """Console entry point: known failures become one line on stderr and exit code 2, never a traceback."""
    interrupts.install()
    try:
        app()
    except (EngineError, HarnessError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        raise SystemExit(130) from None
