"""The models the page offers: each loaded on first use, then kept; one load at a time."""

from __future__ import annotations

import threading
from typing import Callable

from evalkit.core.protocol import GenerationProtocol

BUNDLED_MODELS = ("blip2-tiny-opt", "blip2-tiny-t5")  # the generation models that ship with evalkit


class ModelPool:
    """Model names -> :class:`evalkit.api.Model`, loaded by :meth:`get` the first time a name is asked for."""

    def __init__(self, extra: list[str] | tuple[str, ...] = (), device: str = "auto", dtype: str | None = None):
        self.names = list(dict.fromkeys([*BUNDLED_MODELS, *extra]))
        self.device, self.dtype = device, dtype
        self._loaded: dict = {}
        self._lock = threading.Lock()

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def get(self, name: str, announce: Callable[[str], None] = lambda _: None):
        """The loaded model; ``announce`` hears "loading ..." when it has to be loaded first."""
        from evalkit.api.model import load
        from evalkit.core.errors import EvalkitError

        if name not in self.names:
            raise EvalkitError(f"model {name!r} is not offered here (offered: {', '.join(self.names)})")
        with self._lock:
            if name not in self._loaded:
                announce(f"loading {name} (first use; it stays loaded)")
                self._loaded[name] = load(name, device=self.device, dtype=self.dtype)
            return self._loaded[name]

    def default_protocol(self, name: str, use: str, prompt: str | None = None) -> GenerationProtocol:
        """The task protocol a use takes for this model's family, read without loading the model."""
        from evalkit.api.model import Model
        from evalkit.models.catalog import resolve_model

        if name in self._loaded:
            return self._loaded[name].protocol(use, prompt, _variant(use, prompt))
        return Model(resolve_model(name), checkpoint=None, dtype=self.dtype).protocol(use, prompt,
                                                                                      _variant(use, prompt))


def _variant(use: str, prompt: str | None) -> str | None:
    """Unprompted captions are the caption task's "none" prompt variant, as in `evalkit caption`."""
    return "none" if use == "caption" and prompt is None else None
