"""The first few ids of a list, for one-line error messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def first_ids(ids: Sequence[Any], k: int = 5) -> str:
    """``repr`` of the first ``k`` ids: ``first_ids([11, 12, 13], 2) == "11, 12, ..."``."""
    shown = ", ".join(repr(x) for x in list(ids)[:k])
    return shown + (", ..." if len(ids) > k else "")


def preview_ids(ids: Sequence[Any], k: int = 5) -> str:
    """The first ``k`` ids and how many more: ``preview_ids([1, 2, 3], 2) == "1, 2, ... (1 more)"``."""
    shown = ", ".join(str(i) for i in ids[:k])
    return shown + (f", ... ({len(ids) - k} more)" if len(ids) > k else "")
