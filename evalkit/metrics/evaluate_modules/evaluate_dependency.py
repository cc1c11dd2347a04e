"""The optional ``evaluate`` and ``datasets`` packages the evaluate modules build on, imported in one place
with the install hint when they are missing; and the feature type the modules share."""

from __future__ import annotations

try:
    import datasets
    import evaluate
except ImportError as error:  # pragma: no cover - the message is the point
    raise ImportError("the evalkit evaluate modules need the `evaluate` package: "
                      "pip install 'evalkit[evaluate]'") from error

STRING = datasets.Value("string")

__all__ = ["STRING", "datasets", "evaluate"]
