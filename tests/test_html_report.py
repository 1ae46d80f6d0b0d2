"""`report --html`: one self-contained page, checked as text and rendered in real headless Chromium."""

import json
import re
from pathlib import Path

import pytest
import typer

from harness.commands import report
from harness.comparison.metrics import BY_KEY
from harness.receipts.verify import verify
from harness.reporting.html import History, render_html
from tests.archive_factory import bench_receipt, day, invoke, noisy, speeds, write, write_raw
from tests.browser import open_page
from tests.receipt_factory import raw_receipt


def _app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Test root."""

    report.register(app)
    return app


APP = _app()


@pytest.fixture
def archived(tmp_path: Path) -> tuple[Path, Path]:
    """An archive of five receipts of one model and machine; returns (archive, the newest receipt)."""
    folder = tmp_path / "archive"
    timing = raw_receipt()["phases"]["timing"]  # the stage and per-layer charts draw the timing phase

    def with_timing(r: dict) -> None:
        r["phases"]["timing"] = timing

    paths = [
        write(
            folder,
            bench_receipt(speeds(noisy(center, 5, 0.03, seed)), when=day(seed + 1), edit=with_timing),
        )
        for seed, center in enumerate((100.0, 104.0, 98.0, 110.0, 107.0))
    ]
    return folder, paths[-1]


def test_the_page_is_self_contained_and_escapes_receipt_text(tmp_path: Path) -> None:
    receipt = bench_receipt(speeds([100.0] * 3), when=day(1))
    receipt["model"]["path"] = "/models/<script>alert(1)</script>.gguf"
    page = render_html(receipt, verify(receipt), "r.json", History(None, BY_KEY["decode_tok_s"], "none"))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert not re.search(r"\s(src|href)\s*=", page) and "url(" not in page and "@import" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_report_html_renders_in_chromium_with_the_receipts_numbers(
    tmp_path: Path, archived: tuple[Path, Path]
) -> None:
    folder, newest = archived
    out = tmp_path / "report.html"
    res = invoke(APP, ["report", newest, "--html", out, "--archive", folder])
    assert res.code == 0 and out.is_file(), res.stderr
    receipt = json.loads(newest.read_text())
    url = out.resolve().as_uri()
    with open_page(url) as (page, log):
        assert page.inner_text("#decode-tok-s") == f"{receipt['tokens_per_second']:.2f}"
        assert page.inner_text(".verdict").startswith("VALID")
        for section in ("run", "host", "model", "kernels", "latency", "phases", "verification", "history"):
            assert page.locator(f"section#{section}").is_visible(), section
        assert page.locator("svg.chart").count() >= 4  # latency, stages, layers, history
        assert page.locator("section#history circle").count() == 5  # every archived receipt of this machine
        assert page.locator("section#history circle.current").count() == 1
        gates = page.locator("section#verification tbody tr")
        assert gates.count() == len(verify(receipt).gates)
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        height = page.evaluate("document.documentElement.scrollHeight")
    assert log.errors == []
    assert log.requests == [url]  # nothing but the page itself: no network
    assert shot.stat().st_size > 20_000 and height > 1500


def test_the_pages_history_leaves_out_receipts_that_fail_verification(
    tmp_path: Path, archived: tuple[Path, Path]
) -> None:
    folder, newest = archived
    forged = json.loads(newest.read_text())
    forged["tokens_per_second"] *= 2  # the summary no longer follows from the samples
    forged["timestamp"] = "2026-01-20T12:00:00Z"
    write_raw(folder / "forged.json", forged)
    out = tmp_path / "page.html"
    assert invoke(APP, ["report", newest, "--html", out, "--archive", folder]).code == 0
    history = out.read_text().split('id="history"', 1)[1]
    assert "Left out: 1 archived receipt(s) that fail verification." in history
    assert history.count("<circle") == 5 and "forged.json" not in history


def test_a_failing_receipt_shows_each_failed_gate(tmp_path: Path) -> None:
    receipt = bench_receipt(speeds([100.0] * 3), when=day(1))
    receipt["tokens_per_second"] *= 2
    path = write_raw(tmp_path / "edited.json", receipt)
    out = tmp_path / "bad.html"
    assert (
        invoke(APP, ["report", path, "--html", out, "--archive", tmp_path / "none"]).code == 2
    )  # no such archive
    assert invoke(APP, ["report", path, "--html", out]).code == 0
    with open_page(out.resolve().as_uri()) as (page, log):
        assert page.inner_text(".verdict").startswith("INVALID")
        failed = page.locator("section#verification td.fail")
        assert failed.count() == 2  # throughput and content_digest
        row = page.locator("section#verification tr", has_text="throughput").inner_text()
        assert "expected tokens_per_second" in row and "found" in row
    assert log.errors == []
