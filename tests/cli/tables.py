"""Reading the tables ``flow`` prints, as a person reads them."""

from __future__ import annotations


def column_cells(text: str, header: str, next_header: str) -> str:
    """The text of one column of a borderless rich table (under ``header``, left of
    ``next_header``), its folded lines joined."""
    lines = text.splitlines()
    top = next(i for i, line in enumerate(lines) if header in line and next_header in line)
    start, end = lines[top].index(header), lines[top].index(next_header)
    return "".join(line[start:end].strip() for line in lines[top + 1 :])


def boxed_column(text: str, index: int) -> str:
    """The text of column ``index`` of a boxed rich table, its folded lines joined."""
    return "".join(
        line.split("│")[index + 1].strip() for line in text.splitlines() if line.startswith("│")
    )
