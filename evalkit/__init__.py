"""evalkit: batched, resumable, paper-grade evaluation of BLIP-2 models."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def load(model: str, device: str = "auto", dtype: str | None = None, batch_size: int | None = None):
    """Load a BLIP-2 model to caption images, answer questions and chat: see :func:`evalkit.api.model.load`.

    Imported on first call, so ``import evalkit`` stays light (no torch, no transformers).
    """
    from evalkit.api.model import load as load_model

    return load_model(model, device=device, dtype=dtype, batch_size=batch_size)


class _CheckoutTasksFinder:
    """Finds ``evalkit.tasks`` in a plain checkout, where it is the top-level tasks/ folder.

    An install maps tasks/ to ``evalkit.tasks`` (pyproject's package-dir); from a checkout on
    PYTHONPATH nothing does. This finder sits last on sys.meta_path, so an installed package always
    wins, and it answers for ``evalkit.tasks`` alone; the task modules then resolve from its path.
    """

    TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "evalkit.tasks" or not (cls.TASKS_DIR / "__init__.py").is_file():
            return None
        return importlib.util.spec_from_file_location(name, cls.TASKS_DIR / "__init__.py",
                                                      submodule_search_locations=[str(cls.TASKS_DIR)])


if _CheckoutTasksFinder.__qualname__ not in {getattr(f, "__qualname__", "") for f in sys.meta_path}:
    sys.meta_path.append(_CheckoutTasksFinder)
