"""The task kinds: one module per kind, each holding one object that owns how its tasks run, score,
compare and report.

Task files name their kind with that object (``kind=VQA`` from evalkit.kinds.vqa); run records store
its name, which :func:`kind_named` turns back into the object for compare and report. A new kind is a
new module here with a module-level instance: nothing else lists the kinds.
"""

from __future__ import annotations

import importlib
import pkgutil

from evalkit.core.errors import EvalkitError
from evalkit.core.task_kind import TaskKind

_KINDS: dict[str, TaskKind] = {}


def all_kinds() -> dict[str, TaskKind]:
    """Every kind defined by a module of this package, by name."""
    if not _KINDS:
        for info in pkgutil.iter_modules(__path__):
            module = importlib.import_module(f"{__name__}.{info.name}")
            for value in vars(module).values():
                if isinstance(value, TaskKind):
                    _KINDS.setdefault(value.name, value)
    return _KINDS


def kind_named(name: str) -> TaskKind:
    """The kind a run record names; a one-line error for a kind this evalkit does not know."""
    kinds = all_kinds()
    if name not in kinds:
        raise EvalkitError(f"unknown task kind {name!r} (known: {', '.join(sorted(kinds))})")
    return kinds[name]
