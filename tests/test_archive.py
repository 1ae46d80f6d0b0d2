"""The receipt archive: listing, every selector, `archive add` and `archive prune`, the committed baseline."""

import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.comparison import archive
from harness.errors import HarnessError
from harness.receipts.digest import finalize
from harness.receipts.files import load_receipt, utc_timestamp
from harness.receipts.verify import verify
from tests.archive_factory import COMMIT, bench_receipt, day, fresh_app, invoke, speeds, write, write_raw
from tests.receipt_factory import make_phase_receipt

APP = fresh_app()
OTHER = "fedcba9876543210fedcba9876543210fedcba98"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def filled(tmp_path: Path) -> dict[str, Path]:
    """Four receipts over three days and two commits, plus phases/ and baseline/ content and a broken file."""
    folder = tmp_path / "receipts"
    paths = {
        "d1": write(folder, bench_receipt(speeds([100] * 3), when=day(1), commit=COMMIT)),
        "d2a": write(folder, bench_receipt(speeds([110] * 3), when=day(2, 9), commit=COMMIT)),
        "d2b": write(folder, bench_receipt(speeds([120] * 3), when=day(2, 15), commit=OTHER)),
        "d3": write(folder, bench_receipt(speeds([130] * 3), when=day(3), commit=OTHER)),
    }
    write(folder / "baseline", bench_receipt(speeds([90] * 3), when=day(1, 1)))
    (folder / "phases").mkdir()
    (folder / "phases" / "20250101T000000_tiny_probe.json").write_text("{}")
    (folder / "broken.json").write_text("{not json")
    return {"folder": folder, **paths}


def test_scan_orders_by_timestamp_and_keeps_broken_files_last(filled: dict[str, Path]) -> None:
    entries = archive.scan(filled["folder"])
    names = [e.location for e in entries]
    assert names[:4] == [str(filled[k]) for k in ("d1", "d2a", "d2b", "d3")]
    assert entries[4].name == "broken.json" and entries[4].error and "not valid JSON" in entries[4].error
    assert len(entries) == 5  # baseline/ and phases/ are not part of the archive listing


def test_scan_orders_by_the_receipt_timestamp_not_the_file_name(tmp_path: Path) -> None:
    late = write_raw(tmp_path / "a_late.json", bench_receipt(speeds([1] * 3), when=day(9)))
    early = write_raw(tmp_path / "z_early.json", bench_receipt(speeds([1] * 3), when=day(1)))
    assert [e.location for e in archive.usable(tmp_path)] == [str(early), str(late)]


def test_selectors(filled: dict[str, Path]) -> None:
    folder = filled["folder"]
    assert archive.resolve(str(filled["d1"]), folder).location == str(filled["d1"])
    assert archive.resolve("latest", folder).location == str(filled["d3"])
    assert archive.resolve("latest~0", folder).location == str(filled["d3"])
    assert archive.resolve("latest~1", folder).location == str(filled["d2b"])
    assert archive.resolve("latest~3", folder).location == str(filled["d1"])
    assert archive.resolve("2025-01-02", folder).location == str(filled["d2b"])  # newest on that day
    assert archive.resolve("2025-01-01", folder).location == str(filled["d1"])
    assert archive.resolve(COMMIT[:7], folder).location == str(filled["d2a"])  # newest of that commit
    assert archive.resolve(OTHER[:12], folder).location == str(filled["d3"])
    assert archive.resolve(OTHER.upper()[:8], folder).location == str(filled["d3"])


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("latest~4", "holds only 4 benchmark receipts"),
        ("2025-01-09", "no benchmark receipt"),
        ("2025-13-40", "not a valid date"),
        ("abcd", "matches no benchmark receipt"),
        ("no-such-thing", "matches no benchmark receipt"),
    ],
)
def test_selector_errors(filled: dict[str, Path], selector: str, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        archive.resolve(selector, filled["folder"])


def test_ambiguous_commit_prefix(tmp_path: Path) -> None:
    write(tmp_path, bench_receipt(speeds([1] * 3), when=day(1), commit="abcd" + "0" * 36))
    write(tmp_path, bench_receipt(speeds([1] * 3), when=day(2), commit="abcd" + "1" * 36))
    with pytest.raises(HarnessError, match="ambiguous"):
        archive.resolve("abcd", tmp_path)
    assert Path(archive.resolve("abcd1", tmp_path).location).exists()


def test_missing_archive_folder(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="does not exist"):
        archive.resolve("latest", tmp_path / "nowhere")


def test_archive_list_formats(filled: dict[str, Path]) -> None:
    folder = filled["folder"]
    csv = invoke(APP, ["archive", "list", "--archive", folder, "--format", "csv"])
    assert csv.code == 0
    table = pd.read_csv(io.StringIO(csv.stdout))
    assert list(table.columns) == [
        "date", "commit", "kind", "model", "threads", "decode tok/s", "prefill tok/s", "verification",
        "machine", "file",
    ]  # fmt: skip
    assert list(table["kind"][:4]) == ["benchmark"] * 4
    assert list(table["decode tok/s"][:4]) == pytest.approx([100, 110, 120, 130])
    assert list(table["verification"][:4]) == ["verified"] * 4
    assert table["verification"][4].startswith("unreadable")
    assert list(table["commit"][:4]) == [COMMIT[:8]] * 2 + [OTHER[:8]] * 2
    rows = json.loads(invoke(APP, ["archive", "list", "--archive", folder, "--format", "json"]).stdout)
    assert rows[0]["date"] == "2025-01-01 12:00" and rows[0]["threads"] == 2
    md = invoke(APP, ["archive", "list", "--archive", folder, "--format", "md"]).stdout
    assert "| date | commit | kind | model |" in md
    rich = invoke(APP, ["archive", "list", "--archive", folder]).stdout
    assert "verified" in rich and "5 receipts" in rich


def test_phase_receipts_are_listed_with_their_kind_but_never_selected(filled: dict[str, Path]) -> None:
    """A probe or timing receipt is archived beside the benchmarks; `latest`, dates and commits still name
    the newest benchmark receipt, the one compare judges; a path names any receipt."""
    folder = filled["folder"]
    phase_paths = {}
    for hour, phase in ((20, "probe"), (21, "timing")):
        receipt = make_phase_receipt(phase)
        receipt["started_at"], receipt["timestamp"] = (
            utc_timestamp(day(3, hour - 1)),
            utc_timestamp(day(3, hour)),
        )
        phase_paths[phase] = write(folder, finalize(receipt))
        assert phase_paths[phase].name.endswith(f"_{phase}.json")
    rows = json.loads(invoke(APP, ["archive", "list", "--archive", folder, "--format", "json"]).stdout)
    by_file = {row["file"]: row for row in rows}
    for phase, path in phase_paths.items():
        row = by_file[path.name]
        assert row["kind"] == phase and row["verification"] == "verified"
        assert row["decode tok/s"] is None
    assert archive.resolve("latest", folder).location == str(filled["d3"])
    assert archive.resolve("2025-01-03", folder).location == str(filled["d3"])
    assert archive.resolve(COMMIT[:7], folder).location == str(filled["d2a"])
    assert archive.resolve(str(phase_paths["probe"]), folder).location == str(phase_paths["probe"])
    added, copied = archive.add(phase_paths["timing"], folder / "elsewhere")
    assert copied and Path(added).name == phase_paths["timing"].name


def test_archive_list_flags_a_receipt_that_no_longer_verifies(tmp_path: Path) -> None:
    r = bench_receipt(speeds([100] * 3), when=day(1))
    r["tokens_per_second"] *= 3  # edited after the fact: throughput and digest gates fail
    write_raw(tmp_path / "edited.json", r)
    table = archive.table(archive.scan(tmp_path))
    assert table["verification"][0].startswith("FAILED") and "throughput" in table["verification"][0]


def test_archive_add(tmp_path: Path) -> None:
    src = write_raw(tmp_path / "incoming" / "run.json", bench_receipt(speeds([100] * 3), when=day(4)))
    folder = tmp_path / "receipts"
    res = invoke(APP, ["archive", "add", src, "--archive", folder])
    assert res.code == 0 and "archived:" in res.stdout
    stored = list(folder.glob("*.json"))
    assert len(stored) == 1 and stored[0].name.startswith("20250104T120000")
    assert stored[0].read_bytes() == src.read_bytes()  # the bytes as given, not re-serialized
    again = invoke(APP, ["archive", "add", src, "--archive", folder])
    assert again.code == 0 and "already archived" in again.stdout
    clash = json.loads(src.read_text())
    clash["seed"] = 1
    from harness.receipts.digest import finalize

    other = write_raw(tmp_path / "incoming" / "clash.json", finalize(clash))
    beside = invoke(APP, ["archive", "add", other, "--archive", folder])  # same name, other receipt
    assert beside.code == 0 and stored[0].name.replace(".json", "_2.json") in beside.stdout
    assert stored[0].read_bytes() == src.read_bytes()  # never replaced
    assert (folder / stored[0].name.replace(".json", "_2.json")).read_bytes() == other.read_bytes()
    assert "already archived" in invoke(APP, ["archive", "add", other, "--archive", folder]).stdout


def test_archive_add_refuses_invalid_receipts(tmp_path: Path) -> None:
    bad = bench_receipt(speeds([100] * 3), when=day(4))
    bad["tokens_per_second"] *= 2
    src = write_raw(tmp_path / "bad.json", bad)
    folder = tmp_path / "receipts"
    res = invoke(APP, ["archive", "add", src, "--archive", folder])
    assert res.code == 2 and "fails verification" in res.stderr
    assert not folder.exists() or not list(folder.glob("*.json"))
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    assert invoke(APP, ["archive", "add", junk, "--archive", folder]).code == 2


def test_prune_keeps_the_newest_and_never_touches_subfolders(filled: dict[str, Path]) -> None:
    folder = filled["folder"]
    dry = invoke(APP, ["archive", "prune", "--keep", "2", "--archive", folder, "--dry-run"])
    assert dry.code == 0 and "would delete 2" in dry.stdout
    assert filled["d1"].exists() and filled["d2a"].exists()
    res = invoke(APP, ["archive", "prune", "--keep", "2", "--archive", folder])
    assert res.code == 0 and "deleted 2 receipts" in res.stdout
    assert not filled["d1"].exists() and not filled["d2a"].exists()
    assert filled["d2b"].exists() and filled["d3"].exists()
    assert (folder / "broken.json").exists()  # not a receipt: not the archive's to delete
    assert len(list((folder / "baseline").glob("*.json"))) == 1
    assert (folder / "phases" / "20250101T000000_tiny_probe.json").exists()
    assert invoke(APP, ["archive", "prune", "--keep", "5", "--archive", folder]).stdout.startswith(
        "deleted 0"
    )
    assert invoke(APP, ["archive", "prune", "--keep", "0", "--archive", folder]).code == 2


def test_prune_tolerates_a_file_removed_meanwhile(
    filled: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = archive.prune_plan(filled["folder"], 1)
    Path(plan[0].location).unlink()
    monkeypatch.setattr(archive, "prune_plan", lambda folder, keep: plan)
    assert archive.prune(filled["folder"], 1) == plan
    assert filled["d3"].exists()


# ---------------------------------------------------------------- the committed CI baseline
def _baseline() -> Path:
    found = sorted((REPO / "receipts" / "baseline").glob("*.json"))
    assert len(found) == 1, "receipts/baseline must hold exactly one receipt (.ci/run compares against it)"
    return found[0]


def test_committed_baseline_verifies_and_matches_the_ci_workload() -> None:
    receipt = load_receipt(_baseline())
    result = verify(receipt)
    assert result.ok and result.level == "self-consistent", result.lines()
    assert receipt["model"]["preset"] == "tiny"
    assert receipt["tokens_requested"] == 16 and receipt["prompt"]["token_count"] == 8
    assert len(receipt["phases"]["benchmark"]["repetitions"]) == 2
    ci = (REPO / ".ci" / "run").read_text()
    assert "--preset tiny --tokens 16 --prompt-tokens 8 --repetitions 2" in ci
    assert "receipts/baseline" in ci and "--comparability-only" in ci


def test_baseline_is_not_in_the_archive_listing(tmp_path: Path) -> None:
    shutil.copytree(REPO / "receipts" / "baseline", tmp_path / "baseline")
    assert archive.scan(tmp_path) == []
