"""Tables whose names are never cut: tab-separated lines when stdout is not a terminal; in a terminal, a table
whose name column (and headers) keep their full width while the other columns wrap, or are left out when even
a wrapped column would not fit."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

MIN_WRAPPED_WIDTH = 12  # narrower than this, a wrapped description is unreadable: the column is left out


def print_name_table(console: Console, headers: list[str], rows: list[list[str]], *, title: str | None = None,
                     wrap: tuple[int, ...] = (), numeric: tuple[int, ...] = ()) -> None:
    """Print ``rows`` under ``headers``; column 0 holds the names. ``wrap`` are the columns that may wrap (and be
    dropped when the terminal is too narrow for them); every other cell keeps its whole text. ``numeric``
    columns are right-aligned."""
    if not console.is_terminal:  # a pipe or a file: plain text another program (or a spreadsheet) can read
        console.file.write("\t".join(headers) + "\n")
        for row in rows:
            console.file.write("\t".join(cell.replace("\t", " ").replace("\n", " ") for cell in row) + "\n")
        console.file.flush()
        return
    kept = _columns_that_fit(console.width, headers, rows, wrap)
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for index in kept:
        whole, header = index not in wrap, headers[index]
        width = max([_widest_word(header)] + [len(row[index]) for row in rows]) if whole else None
        if whole and len(header) > width:  # a header wider than its cells breaks between its words
            header = "\n".join(header.split())
        table.add_column(escape(header), no_wrap=whole, min_width=width, overflow="fold",
                         justify="right" if index in numeric else "left")
    for row in rows:
        table.add_row(*(escape(row[i]) for i in kept))  # a name may hold '[' (a folder called 'ro[/x]')
    console.print(table)
    if len(kept) < len(headers):
        left_out = ", ".join(headers[i] for i in range(len(headers)) if i not in kept)
        console.print(f"({left_out} left out: the terminal is {console.width} columns wide; "
                      "pipe the output for every column)", highlight=False)


def _widest_word(header: str) -> int:
    """A header may break between words (rich wraps it there), never inside one."""
    return max(len(word) for word in header.split())


def _columns_that_fit(width: int, headers: list[str], rows: list[list[str]], wrap: tuple[int, ...]) -> list[int]:
    """The columns to show: every whole column, and the wrapped ones while each still gets a readable width."""
    whole = [i for i in range(len(headers)) if i not in wrap]
    needed = sum(max([_widest_word(headers[i])] + [len(r[i]) for r in rows]) + 1 for i in whole)
    kept = list(whole)
    for index in wrap:
        if width - needed >= MIN_WRAPPED_WIDTH + 1:
            kept.append(index)
            needed += MIN_WRAPPED_WIDTH + 1
    return sorted(kept)
