"""Every table the commands print, rendered by tabulate: aligned text for the terminal,
markdown for the docs. Cells are shown as given (no number parsing); by default the first
column is left-aligned and the others right-aligned."""

from __future__ import annotations

from collections.abc import Sequence

from tabulate import tabulate

Row = Sequence[object]


def text(header: Row, rows: Sequence[Row], right: Sequence[bool] | None = None) -> str:
    """A terminal table: the header, a dashed rule, the rows; `right` says which columns
    are right-aligned."""
    return "\n".join(line.rstrip() for line in _render(header, rows, right, "simple").splitlines())


def markdown(header: Row, rows: Sequence[Row], right: Sequence[bool] | None = None) -> str:
    return _render(header, rows, right, "pipe")


def _render(header: Row, rows: Sequence[Row], right: Sequence[bool] | None, fmt: str) -> str:
    flags = right if right is not None else [i > 0 for i in range(len(header))]
    table: str = tabulate(
        rows, headers=[str(h) for h in header], tablefmt=fmt, disable_numparse=True,
        colalign=["right" if r else "left" for r in flags],
    )  # fmt: skip
    return table
