"""Progress bars (rich) for long loops; silent when disabled or not on a terminal."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn


@contextmanager
def progress_bar(description: str, total: int | None, completed: int = 0,
                 enabled: bool = True) -> Iterator[Callable[..., None]]:
    """Yields ``advance(n, total=None)``; shows done / total, elapsed and remaining time on stderr.

    ``total`` may be unknown (None) at the start and given later through ``advance``.
    """
    if not enabled:
        yield lambda n, total=None: None
        return
    from rich.console import Console

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task_id = progress.add_task(description, total=total, completed=completed)

        def advance(n: int, new_total: int | None = None) -> None:
            progress.update(task_id, advance=n, **({"total": new_total} if new_total is not None else {}))

        yield advance
