"""Bad option values, missing arguments, unknown options and options given twice: one `error:` line and exit
2 from every command, like every other bad input; --help still works and exits 0."""

import subprocess
import sys

import pytest
import typer.main
from typer.testing import CliRunner

from harness.cli import app

runner = CliRunner()

# One bad value (or a missing argument / required option) per command; every command must be listed.
BAD_VALUES = {
    "probe": (["--format", "q4_0"], "invalid value for '--format': 'q4_0' is not one of"),
    "timing": (["--steps", "none"], "invalid value for '--steps'"),
    "benchmark": (["--format", "q4_0"], "'q4_0' is not one of"),
    "run": (["-n", "-3"], "invalid value for '-n'"),
    "verify-receipt": ([], "missing option '--path'"),
    "report": ([], "missing argument 'path'"),
    "archive list": (["--format", "xml"], "invalid value for '--format'"),
    "archive add": ([], "missing argument 'receipt'"),
    "archive prune": (["--keep", "0"], "invalid value for '--keep'"),
    "archive machines": (["--format", "xml"], "invalid value for '--format'"),
    "compare": (["a.json", "b.json", "--threshold", "lots"], "invalid value for '--threshold'"),
    "history": (["--threads", "0"], "invalid value for '--threads'"),
    "parity": (["--model", "m.gguf", "--reference", "vllm"], "invalid value for '--reference'"),
    "bench-kernels": (["--repeats", "0"], "invalid value for '--repeats'"),
    "model synth": (["--out", "x.gguf", "--preset", "huge"], "invalid value for '--preset'"),
    "model inspect": ([], "missing argument 'file'"),
    "model convert": ([], "missing argument 'folder'"),
    "keygen": ([], "missing option '--out'"),
}


def _leaf_commands(group: object, prefix: tuple[str, ...] = ()) -> list[str]:
    out = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        path = (*prefix, name)
        out += _leaf_commands(command, path) if hasattr(command, "commands") else [" ".join(path)]
    return out


COMMANDS = _leaf_commands(typer.main.get_command(app))


def _one_error_line(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_every_command_has_a_bad_value_case() -> None:
    assert sorted(BAD_VALUES) == sorted(COMMANDS)


@pytest.mark.parametrize("command", sorted(BAD_VALUES))
def test_a_bad_value_is_one_line(command: str) -> None:
    args, message = BAD_VALUES[command]
    line = _one_error_line([*command.split(), *args])
    assert message in line
    assert line.endswith(f"; see bitnet-harness {command} --help")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_one_line(command: str) -> None:
    line = _one_error_line([*command.split(), "--no-such-option"])
    assert "no such option: --no-such-option" in line


REPEATED = [
    ["benchmark", "--repetitions", "3", "--repetitions", "5"],
    ["benchmark", "--no-probe", "--probe"],
    ["timing", "--steps", "2", "--steps", "3"],
    ["compare", "a", "b", "--threshold", "5", "--threshold", "10"],
    ["archive", "list", "--archive", "a", "--archive", "b"],
    ["model", "synth", "--out", "a.gguf", "--out", "b.gguf"],
]


@pytest.mark.parametrize("args", REPEATED, ids=lambda a: " ".join(a[:3]))
def test_a_single_value_option_given_twice_is_refused(args: list[str]) -> None:
    line = _one_error_line(args)
    assert "is given 2 times; give it once" in line


def test_an_unknown_command_and_a_missing_value_are_one_line() -> None:
    assert "no such command 'nosuch'" in _one_error_line(["nosuch"])
    assert "option '--steps' requires an argument" in _one_error_line(["timing", "--steps"])


@pytest.mark.parametrize("args", [["--help"], ["benchmark", "--help"], ["archive", "list", "--help"]])
def test_help_still_exits_0(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_no_arguments_show_the_help_and_exit_2() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 2 and "Commands" in result.stdout


def test_the_console_script_prints_the_same_line() -> None:
    argv = [sys.executable, "-c", "from harness.entry import main; main()", "benchmark", "--format", "q4_0"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: invalid value for '--format'") and proc.stderr.count("\n") == 1
