"""Official-format JSON files (COCO captions, VQAv2), read with one-line errors that name the file."""

from __future__ import annotations

import gc
import gzip
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from evalkit.core.errors import EvalkitError


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: parsing ~2M answer dicts otherwise triggers it hundreds of
    times and doubles the load time of a full VQAv2 annotation file."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _open_text(path: Path) -> IO[str]:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Parse a JSON file, gzip-compressed when its name ends in ``.gz``.

    Every failure is one :class:`~evalkit.core.errors.EvalkitError` line that starts with
    ``what`` and names the file, e.g. ``"VQA questions file q.json is not valid JSON: ..."``.
    """
    p = Path(path)
    if not p.exists():
        raise EvalkitError(f"{what} file not found: {p}")
    if p.is_dir():
        raise EvalkitError(f"{what} file {p} is a directory, expected a JSON file")
    try:
        with _open_text(p) as handle, _gc_paused():
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise EvalkitError(f"{what} file {p} is not valid JSON: {exc.msg} "
                           f"(line {exc.lineno}, column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise EvalkitError(f"{what} file {p} cannot be read: UnicodeDecodeError: {exc} (not UTF-8 text)") from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        raise EvalkitError(f"{what} file {p} cannot be read: {type(exc).__name__}: {exc}".replace("\n", " ")) from None


def is_int(value: Any) -> bool:
    """True for a JSON integer: not a bool, not ``1.0``, not ``"1"``."""
    return type(value) is int
