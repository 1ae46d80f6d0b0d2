"""A pandas table as a rich table for the terminal."""

import pandas as pd
from rich.table import Table
from rich.text import Text

from harness.comparison.tables import cell


def rich_table(frame: pd.DataFrame, title: str) -> Table:
    """A rich table; cells are plain text, never interpreted as markup."""
    table = Table(title=title, title_justify="left")
    for column in frame.columns:
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        table.add_column(str(column), justify="right" if numeric else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(Text(cell(v)) for v in row))
    return table
