"""Tables of receipts and comparisons as text: the output formats (rich, markdown, csv, json), cells, markdown
and JSON records. The rich table itself is in harness.reporting.tables."""

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
