"""`history`: a metric over the archive with its noise band, as a table, a terminal chart and a PNG/SVG."""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.comparison import archive, history
from harness.comparison.metrics import BY_KEY, groups, samples
from harness.errors import HarnessError
from tests.archive_factory import bench_receipt, day, fresh_app, invoke, speeds, write
from tests.receipt_factory import OUTPUT_IDS

APP = fresh_app()
SPEEDS = {1: [100, 104, 96, 102, 98], 2: [120, 130, 110, 125, 115], 3: [90, 91, 89, 90, 90]}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for d, tok_s in SPEEDS.items():
        write(tmp_path, bench_receipt(speeds(tok_s), when=day(d)))
    write(tmp_path, bench_receipt(speeds([500] * 4), when=day(4), edit=lambda r: r.__setitem__("threads", 1)))
    return tmp_path


def _rate(tok_s: list[float]) -> float:
    """Decode steps over their summed seconds: every step of a repetition takes 1 / its speed."""
    return len(tok_s) / sum(1.0 / v for v in tok_s)


def test_frame_rows_value_and_band(folder: Path) -> None:
    table = history.frame(archive.usable(folder), BY_KEY["decode_tok_s"])
    assert list(table["date"]) == [
        "2025-01-01 12:00",
        "2025-01-02 12:00",
        "2025-01-03 12:00",
        "2025-01-04 12:00",
    ]
    for i, tok_s in enumerate(SPEEDS.values()):
        assert table["value"][i] == pytest.approx(_rate(tok_s))  # the receipt's tokens_per_second
        # the block bootstrap over repetitions: its band lies within the slowest and fastest repetition
        assert min(tok_s) <= table["band low"][i] < table["value"][i] < table["band high"][i] <= max(tok_s)
    steps = len(OUTPUT_IDS) - 1
    assert list(table["n"]) == [5 * steps, 5 * steps, 5 * steps, 4 * steps]
    prefill = history.frame(archive.usable(folder), BY_KEY["ttft_s"])
    assert list(prefill["n"]) == [5, 5, 5, 4]


def test_filters(folder: Path) -> None:
    entries = archive.usable(folder)
    assert len(history.frame(entries, BY_KEY["decode_tok_s"], threads=1)) == 1
    assert len(history.frame(entries, BY_KEY["decode_tok_s"], model="tiny")) == 4
    assert history.frame(entries, BY_KEY["decode_tok_s"], model="other").empty


def test_token_latency_band_is_a_seeded_bootstrap_around_the_value() -> None:
    rng = np.random.default_rng(2)
    reps = [
        {"decode": list(rng.exponential(0.01, 3) + 0.001), "prefill": 0.01, "ttft": 0.011} for _ in range(20)
    ]
    receipt = bench_receipt(reps)
    m = BY_KEY["latency_p50_s"]
    x = samples(receipt, m)
    low, high = history.band(x, m, groups(receipt, m))
    assert low <= float(np.percentile(x, 50)) <= high and low < high
    assert history.band(x, m, groups(receipt, m)) == (low, high)
    rss = BY_KEY["peak_rss_bytes"]
    assert history.band(samples(receipt, rss), rss) == (100 << 20, 100 << 20)


def test_terminal_chart(folder: Path) -> None:
    table = history.frame(archive.usable(folder), BY_KEY["decode_tok_s"], threads=2)
    lines = history.terminal_chart(table, BY_KEY["decode_tok_s"], width=40)
    assert "higher is better" in lines[0] and "noise band" in lines[0]
    assert len(lines) == 4
    for line in lines[1:]:
        plot = line.split("│")[1]
        assert len(plot) == 40 and "●" in plot
    assert "├" in lines[2] and "┤" in lines[2]  # the noisy day has a visible band
    assert lines[2].index("●") > lines[3].index("●")  # 120 tok/s plots right of 90 tok/s
    assert history.terminal_chart(table.iloc[0:0], BY_KEY["decode_tok_s"]) == []


def test_history_cli_formats(folder: Path) -> None:
    rich = invoke(APP, ["history", "--metric", "decode_tok_s", "--archive", folder])
    assert rich.code == 0 and "●" in rich.stdout and "band low" in rich.stdout
    csv = invoke(APP, ["history", "--archive", folder, "--format", "csv", "--threads", "2"])
    table = pd.read_csv(io.StringIO(csv.stdout))
    assert list(table["value"]) == pytest.approx([_rate(v) for v in SPEEDS.values()])
    js = json.loads(
        invoke(APP, ["history", "--archive", folder, "--metric", "ttft_s", "--format", "json"]).stdout
    )
    assert js[0]["value"] == pytest.approx(0.011)
    md = invoke(APP, ["history", "--archive", folder, "--format", "md"]).stdout
    assert "| date | commit |" in md and "●" not in md


def test_history_cli_errors(folder: Path) -> None:
    assert invoke(APP, ["history", "--metric", "speed", "--archive", folder]).code == 2
    empty = invoke(APP, ["history", "--archive", folder, "--model", "nothing"])
    assert empty.code == 2 and "no receipt" in empty.stderr
    assert invoke(APP, ["history", "--archive", folder, "--chart", folder / "x.gif"]).code == 2


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_chart_file(folder: Path, tmp_path: Path, suffix: str) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "charts" / f"decode{suffix}"
    res = invoke(APP, ["history", "--archive", folder, "--chart", target])
    assert res.code == 0 and target.stat().st_size > 1000
    head = target.read_bytes()[:8]
    assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<?xml" in head


def test_chart_without_matplotlib_says_how_to_get_it(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    table = history.frame(archive.usable(folder), BY_KEY["decode_tok_s"])
    with pytest.raises(HarnessError, match=r"bitnet-harness\[plot\]"):
        history.write_chart(table, BY_KEY["decode_tok_s"], tmp_path / "c.png")
    res = invoke(APP, ["history", "--archive", folder, "--chart", tmp_path / "c.png"])
    assert res.code == 2 and not (tmp_path / "c.png").exists()


def test_history_skips_receipts_that_fail_verification_with_a_warning(folder: Path) -> None:
    forged = bench_receipt(speeds([900] * 3), when=day(9), edit=lambda r: r.update(peak_rss_bytes=0))
    write(folder, forged)
    res = invoke(APP, ["history", "--archive", folder, "--format", "json"])
    assert res.code == 0
    assert (
        len(json.loads(res.stdout)) == len(SPEEDS) + 1
    )  # the forged receipt's 900 tok/s is not in the table
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("warning: skipped")]
    assert "fails verification (gate host_resources:" in line
