"""Tables of receipts and comparisons as text: the output formats (rich, markdown, csv, json; jsonl for a
benchmark's summary), cells, markdown and JSON records. harness.reporting.tables draws the rich table."""

import json
import math
from enum import Enum
from typing import Any

import pandas as pd


class OutputFormat(str, Enum):
    rich = "rich"
    md = "md"
    csv = "csv"
    json = "json"


class TableFormat(str, Enum):
    """The text formats of a benchmark's summary table, llama-bench's set (`-o md|csv|json|jsonl`)."""

    md = "md"
    csv = "csv"
    json = "json"
    jsonl = "jsonl"


def cell(value: Any) -> str:
    """A table cell as text: missing values as '-', floats with four significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped), fit for a PR comment."""

    def esc(value: Any) -> str:
        return cell(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(c) for c in frame.columns) + " |"]
    lines.append("| " + " | ".join("---" for _ in frame.columns) + " |")
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    return "\n".join(lines)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (NaN becomes null)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return clean.to_dict(orient="records")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, allow_nan=False, default=str)


def frame_text(frame: pd.DataFrame, fmt: str, title: str) -> str:
    """A table as text: markdown (with a bold title), CSV, a JSON array of records or JSON lines."""
    if fmt == "json":
        return dumps(records(frame)) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(row, allow_nan=False, default=str) + "\n" for row in records(frame))
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "md":
        return f"**{title}**\n\n{markdown(frame)}\n"
    raise ValueError(f"no text format {fmt!r}")
