"""evalkit's cache folder: what evalkit derives once per machine and may delete and rebuild at any time."""

from __future__ import annotations

import os
from pathlib import Path


def evalkit_cache_folder() -> Path:
    """``$EVALKIT_CACHE``, else ``$XDG_CACHE_HOME/evalkit``, else ``~/.cache/evalkit`` (not created here)."""
    if os.environ.get("EVALKIT_CACHE"):
        return Path(os.environ["EVALKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evalkit"
