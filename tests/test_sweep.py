"""Sweeps: comma lists expand into one request per combination, refused whole before any work when a value or
a mode does not fit; run in one process, each combination writes a verified receipt, models are loaded only
when the combination needs another, and the summary table comes out as md, csv, json and jsonl."""

import io
import json
from pathlib import Path
from typing import Any

import numba
import pandas as pd
import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.errors import HarnessError
from harness.receipts.files import load_receipt
from harness.receipts.verify import verify
from harness.session.benchmark import run_benchmark_session
from harness.session.evidence import gather
from harness.session.request import BenchmarkRequest
from tests.test_session import Recorder

runner = CliRunner()
TINY = [
    "--preset",
    "tiny",
    "--repetitions",
    "1",
    "--warmup",
    "0",
    "--no-probe",
    "--no-timing",
    "--no-bandwidth",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BITNET_HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "harness-cache"))


def _sweep(tmp_path: Path, **changes: Any) -> BenchmarkRequest:
    base: dict[str, Any] = {
        "preset": "tiny",
        "tokens": 3,
        "prompt_tokens": 4,
        "repetitions": 1,
        "warmup": 0,
        "probe_phase": False,
        "timing_phase": False,
        "bandwidth": False,
        "receipts_dir": tmp_path / "receipts",
    }
    return BenchmarkRequest(**{**base, **changes})


def test_combinations_run_the_last_axis_fastest(tmp_path: Path) -> None:
    request = _sweep(tmp_path, kernel=("i2s", "tl1"), threads=(1, 2), tokens=(3, 5))
    combos = [(c.kernel, c.threads, c.tokens) for c in request.combinations()]
    assert combos == [
        ("i2s", 1, 3), ("i2s", 1, 5), ("i2s", 2, 3), ("i2s", 2, 5),
        ("tl1", 1, 3), ("tl1", 1, 5), ("tl1", 2, 3), ("tl1", 2, 5),
    ]  # fmt: skip
    assert [p.request.tokens for p in request.plans()] == [3, 5] * 4
    assert _sweep(tmp_path).combinations() == [_sweep(tmp_path)]
    with pytest.raises(ValueError, match="plans"):
        request.validate()


REFUSED = [
    ({"tokens": (3, 5), "compare_to": "latest"}, "--compare-to runs one configuration"),
    ({"threads": (1, 2), "ab_kernel": "i2s,tl1"}, "--ab-kernel/--ab-threads runs one configuration"),
    ({"kernel": ("i2s", "tl2"), "vs_llama_cpp": True}, "--vs-llama-cpp runs one configuration"),
    ({"tokens": (3, 5, 3)}, "--tokens lists 3 more than once"),
    ({"prompt_tokens": ()}, "--prompt-tokens lists no value"),
    ({"tokens": (3, 0)}, "--tokens must be >= 1"),
    ({"threads": (1, 999)}, "--threads must be between 1 and"),
    ({"kernel": ("i2s", "gpu")}, "unknown kernel 'gpu'"),
    ({"fmt": ("i2s", "tq2_0"), "model": Path("m.gguf")}, "list the files instead"),
    ({"model": (Path("/nonexistent/a.gguf"), Path("/nonexistent/b.gguf"))}, "does not exist"),
]


@pytest.mark.parametrize(("changes", "message"), REFUSED)
def test_a_sweep_is_refused_whole_before_any_work(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    recorder = Recorder()
    with pytest.raises(HarnessError, match=message):
        run_benchmark_session(_sweep(tmp_path, **changes), recorder)
    assert recorder.events == []
    assert not (tmp_path / "receipts").exists()


def test_options_take_comma_lists_and_repeats_and_refuse_bad_items() -> None:
    """`--tokens 16 --tokens 32` is the list 16,32 (here refused with --compare-to as a sweep, before any
    work), never the last one silently winning; a bad item is a one-line usage error."""
    for args in (
        ["--tokens", "16", "--tokens", "32"],
        ["-n", "16,32"],
        ["--kernel", "i2s,tl1"],
        ["-t", "1,2"],
    ):
        result = runner.invoke(app, ["benchmark", *args, "--compare-to", "latest"])
        assert isinstance(result.exception, HarnessError) and "a sweep" in str(result.exception), args
    for args, message in (
        (["--tokens", "16,x"], "invalid value for '--tokens' / '-n': 'x' in '16,x' is not an integer >= 1"),
        (["-p", "0"], "'0' in '0' is not an integer >= 1"),
        (["--kernel", "i2s,gpu"], "'gpu' in 'i2s,gpu' is not one of auto, i2s, tl1, tl2"),
        (["--format", "q4_0"], "'q4_0' in 'q4_0' is not one of i2s"),
    ):
        result = runner.invoke(app, ["benchmark", *args])
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (["--output", "table.txt"], "give --output-format"),
        (["--output-format", "csv", "--json"], "both print to stdout"),
    ],
)
def test_output_options_are_checked_before_any_work(tmp_path: Path, output: list[str], message: str) -> None:
    result = runner.invoke(app, ["benchmark", *TINY, "--receipts-dir", str(tmp_path), *output])
    assert isinstance(result.exception, HarnessError) and message in str(result.exception)
    assert list(tmp_path.iterdir()) == []


def _loads(recorder: Recorder) -> int:
    return sum(e.startswith("status: loading") for e in recorder.events)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs two numba threads")
def test_a_model_is_loaded_once_while_the_combinations_can_share_it(tmp_path: Path) -> None:
    """Threads and workload change on one loaded model; another kernel needs another; `--kernel auto`
    chooses by timing on the thread count, so each thread count loads its own."""
    recorder = Recorder()
    outcome = run_benchmark_session(_sweep(tmp_path, threads=(1, 2), prompt_tokens=(4, 6)), recorder)
    assert _loads(recorder) == 2  # kernel auto: once per thread count
    assert len(outcome.receipts) == 4 and outcome.exit_code == 0
    got = [(w.receipt["threads"], w.receipt["prompt"]["token_count"]) for w in outcome.receipts]
    assert got == [(1, 4), (1, 6), (2, 4), (2, 6)]
    recorder = Recorder()
    outcome = run_benchmark_session(_sweep(tmp_path, kernel=("i2s", "tl1"), threads=(1, 2)), recorder)
    assert _loads(recorder) == 2  # one per kernel, shared by both thread counts
    got = [(w.receipt["kernel_choice"]["requested"], w.receipt["threads"]) for w in outcome.receipts]
    assert got == [("i2s", 1), ("i2s", 2), ("tl1", 1), ("tl1", 2)]
    for w in outcome.receipts:
        receipt = load_receipt(w.path)
        result = verify(receipt, gather(receipt, model=Path(w.receipt["model"]["path"])))
        assert result.ok and result.gate("timestamps").status == "pass", result.lines()


def _parse(path: Path) -> list[dict[str, Any]]:
    text = path.read_text()
    if path.suffix == ".csv":
        return pd.read_csv(io.StringIO(text)).to_dict(orient="records")
    if path.suffix == ".json":
        return json.loads(text)
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines()]
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [
        dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]
    ]


@pytest.mark.parametrize("suffix", [".md", ".csv", ".json", ".jsonl"])
def test_a_sweep_writes_its_summary_in_each_format(tmp_path: Path, suffix: str) -> None:
    receipts, table = tmp_path / "receipts", tmp_path / f"summary{suffix}"
    args = ["benchmark", *TINY, "-t", "1", "-p", "4,6", "--tokens", "3", "--tokens", "5", "--kernel", "i2s"]
    result = runner.invoke(app, [*args, "--receipts-dir", str(receipts), "--output", str(table)])
    assert result.exit_code == 0, result.output
    rows = _parse(table)
    assert [(int(r["prompt tokens"]), int(r["tokens"])) for r in rows] == [(4, 3), (4, 5), (6, 3), (6, 5)]
    assert {r["verification"] for r in rows} == {"verified"}
    assert sorted(Path(r["receipt"]) for r in rows) == sorted(receipts.glob("*.json"))
    for row in rows:
        receipt = load_receipt(Path(row["receipt"]))
        assert verify(receipt).ok
        assert float(row["decode tok/s"]) > 0 and int(row["threads"]) == receipt["threads"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # written atomically


def test_the_summary_goes_to_stdout_in_the_chosen_format(tmp_path: Path) -> None:
    args = [
        "benchmark",
        *TINY,
        "-t",
        "1",
        "-n",
        "3,4",
        "--receipts-dir",
        str(tmp_path),
        "--output-format",
        "jsonl",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["tokens"] for r in rows] == [3, 4]
    result = runner.invoke(
        app, ["benchmark", *TINY, "-t", "1", "-n", "3,4", "--receipts-dir", str(tmp_path), "--json"]
    )
    data = json.loads(result.stdout)
    assert len(data["receipts"]) == 2 and all(r["verification"]["valid"] for r in data["receipts"])
    assert [r["tokens"] for r in data["summary"]] == [3, 4]


def test_model_files_and_formats_are_axes_too(tmp_path: Path) -> None:
    files = [tmp_path / "a.gguf", tmp_path / "b.gguf"]
    for seed, path in enumerate(files):
        synth = runner.invoke(app, ["model", "synth", "--seed", str(seed), "--out", str(path)])
        assert synth.exit_code == 0, synth.output
    args = [
        "benchmark",
        *TINY,
        "-t",
        "1",
        "-n",
        "3",
        "-m",
        f"{files[0]},{files[1]}",
        "--output-format",
        "csv",
    ]
    result = runner.invoke(app, [*args, "--receipts-dir", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(io.StringIO(result.stdout))
    models = [load_receipt(Path(p))["model"] for p in rows["receipt"]]
    assert [m["path"] for m in models] == [str(f) for f in files]
    assert models[0]["sha256"] != models[1]["sha256"] and models[1]["preset_seed"] == 1
    recorder = Recorder()
    outcome = run_benchmark_session(_sweep(tmp_path, fmt=("i2s", "tq2_0"), kernel="i2s"), recorder)
    assert [w.receipt["model"]["format"] for w in outcome.receipts] == ["i2s", "tq2_0"]
    assert _loads(recorder) == 2 and outcome.exit_code == 0
