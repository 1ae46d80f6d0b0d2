"""The GitHub Actions workflows: actionlint (with shellcheck on every `run:` script) finds nothing in any of
them, and every `bitnet-harness` command line in them uses options the command really has."""

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from harness.cli import app

yaml = pytest.importorskip("yaml", reason="reading the workflows needs PyYAML (the test extra)")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
_BIN = Path(sys.executable).parent


def _tool(name: str) -> str | None:
    """A tool installed by the test extra (next to this Python) or on PATH."""
    beside = _BIN / name
    return str(beside) if beside.is_file() else shutil.which(name)


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    actionlint = _tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (the test extra installs it)")
    shellcheck = _tool("shellcheck")
    args = [actionlint, "-no-color", f"-shellcheck={shellcheck or ''}", *map(str, paths)]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_there_are_a_ci_and_a_reusable_workflow() -> None:
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "benchmark.yml"}
    reusable = yaml.safe_load((ROOT / ".github" / "workflows" / "benchmark.yml").read_text())
    call = reusable[True]["workflow_call"]  # YAML 1.1 reads the key `on` as true
    assert {"model-path", "threshold", "baseline", "archive-url"} <= set(call["inputs"])


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint_finds_nothing(workflow: Path) -> None:
    done = _actionlint(workflow)
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    broken.write_text(text.replace("runs-on: ubuntu-latest", "runs-on: ${{ matrix.nowhere }}", 1))
    done = _actionlint(broken)
    assert done.returncode != 0 and "matrix" in done.stdout


def _options(command: Any) -> set[str]:
    return {opt for p in command.params for opt in getattr(p, "opts", []) if opt.startswith("--")}


def _cli_lines(workflow: Path) -> list[tuple[str, str]]:
    """(step run text, subcommand) for each step that runs a bitnet-harness subcommand."""
    doc = yaml.safe_load(workflow.read_text())
    found = []
    for job in doc["jobs"].values():
        for step in job.get("steps", []):
            run = step.get("run", "")
            for sub in re.findall(r"bitnet-harness ([a-z][a-z-]*)", run):
                found.append((run, sub))
    return found


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_command_lines_use_real_options(workflow: Path) -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    lines = _cli_lines(workflow)
    assert lines
    for run, sub in lines:
        command = commands[sub]
        flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", run))
        assert flags <= _options(command) | {"--help"}, (sub, flags - _options(command))


def test_ci_workflow_runs_the_product_end_to_end() -> None:
    text = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    for needed in (
        "pytest",
        "bitnet-harness benchmark --preset tiny",
        "verify-receipt --path ci-receipts/*.json --replay --junit",
        "compare receipts/baseline/*.json ci-receipts/*.json --comparability-only",
        "actions/upload-artifact",
        "uses: ./.github/workflows/benchmark.yml",
    ):
        assert needed in " ".join(text.split()), needed


def _yaml_examples() -> list[tuple[str, str]]:
    """(where, text) of every ```yaml block of the README and docs/ci.md that defines jobs."""
    out = []
    for doc in (ROOT / "README.md", ROOT / "docs" / "ci.md"):
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", doc.read_text(), flags=re.S)):
            if "jobs:" in block:
                out.append((f"{doc.name}#{i}", block))
    return out


EXAMPLES = _yaml_examples()


@pytest.mark.parametrize(("where", "block"), EXAMPLES, ids=[where for where, _ in EXAMPLES])
def test_documented_examples_pass_actionlint(tmp_path: Path, where: str, block: str) -> None:
    """A caller's workflow as the docs show it (a jobs-only example gets a trigger) lints clean."""
    text = block if re.search(r"^on:", block, flags=re.M) else f"name: example\non: [pull_request]\n{block}"
    path = tmp_path / ".github" / "workflows" / "example.yml"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    done = _actionlint(path)
    assert done.returncode == 0 and done.stdout == "", (where, done.stdout + done.stderr)
