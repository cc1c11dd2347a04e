"""Files that are either whole or absent: written to a temp file, fsynced, renamed over the target; and the one-line
error a write that the environment refuses (a full disk, a read-only folder) becomes."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from evalkit.core.errors import EvalkitError


@contextlib.contextmanager
def writing(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """An OSError inside (ENOSPC, EACCES, EROFS, ...) becomes one line naming ``path``; ``tmp``, the temp file being
    written in its place, is removed so nothing half-written is left behind."""
    try:
        yield
    except OSError as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        reason = err.strerror or type(err).__name__
        raise EvalkitError(f"cannot write {path}: {reason}; what was written before is kept, so the same "
                           "command resumes once this is fixed") from None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temp file in the same folder, fsync, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with writing(path, tmp):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False, sort_keys=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
