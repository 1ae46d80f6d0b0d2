"""docs/formats.md states the format facts the engine relies on; its pinned tables must equal the code."""

import math
import re
from pathlib import Path

import pytest

from engine.constants import FORMAT_GGML_TYPE, FileType, GGMLType
from engine.flavor import tolerance
from engine.formats import FORMATS
from engine.strict import strict_mode_from_env

DOC = (Path(__file__).resolve().parent.parent / "docs" / "formats.md").read_text(encoding="utf-8")


def _table(heading: str) -> list[list[str]]:
    """The rows of the first markdown table after `heading` (cells stripped, backticks removed)."""
    after = DOC[DOC.index(heading) :]
    lines = [ln for ln in after.splitlines() if ln.startswith("|")]
    block = []
    for line in after.splitlines()[after.splitlines().index(lines[0]) :]:
        if not line.startswith("|"):
            break
        block.append([c.strip().strip("`") for c in line.strip("|").split("|")])
    return block[2:]  # without the header and the --- row


def test_type_ids_are_the_engines() -> None:
    rows = _table("## Type ids (pinned)")
    assert {int(r[0]): r[1] for r in rows} == {int(t): t.name for t in GGMLType}


def test_file_types_are_the_engines() -> None:
    rows = _table("`general.file_type` (pinned)")
    assert {int(r[0]): r[1] for r in rows} == {int(t): t.name for t in FileType}


SHAPES = [(1, 256), (3, 512), (7, 2560), (2560, 6912), (5, 288), (640, 2560)]


@pytest.mark.parametrize(("rows", "cols"), SHAPES)
def test_size_formulas_are_the_engines(rows: int, cols: int) -> None:
    table = _table("## Tensor sizes (pinned)")
    assert {r[0] for r in table} == set(FORMATS)
    for fmt, type_id, formula in table:
        assert int(type_id) == FORMAT_GGML_TYPE[fmt]
        if fmt in ("tq1_0", "tq2_0") and cols % 256:
            continue
        stated = eval(formula, {"__builtins__": {}}, {"rows": rows, "cols": cols, "ceil": math.ceil})  # noqa: S307
        assert stated == FORMATS[fmt].expected_nbytes(rows, cols), (fmt, rows, cols, formula)


def test_tolerance_and_strict_mode_are_the_engines() -> None:
    formula = re.search(r"pinned: `([^`]+)` bytes", DOC)
    assert formula is not None
    for expected in (0, 100, 7_999, 8_000, 8_001, 1_638_432, 442_368_032):
        assert eval(formula[1], {"__builtins__": {"max": max}}, {"expected": expected}) == tolerance(expected)  # noqa: S307
    assert "`BITNET_STRICT_MODE` is `1` or `true` (any case)" in " ".join(DOC.split())
    for value, strict in (("1", True), ("true", True), ("TRUE", True), ("0", False), ("yes", False)):
        assert strict_mode_from_env({"BITNET_STRICT_MODE": value}) is strict
