"""The `bitnet-harness` command: one typer app; each module of harness.commands adds its command."""

import typer

from engine.errors import EngineError
from harness.errors import HarnessError
from harness.runtime import interrupts
from harness.version import harness_version

EXIT_USAGE = 2

app = typer.Typer(
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
