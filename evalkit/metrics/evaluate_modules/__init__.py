"""evalkit's metrics as Hugging Face ``evaluate`` modules, for training loops that already use ``evaluate``.

Three modules, each a thin :class:`evaluate.Metric` over evalkit's pure metric functions, so the numbers
are those of ``evalkit score`` / ``evalkit run`` (0-100 scale):

============================  ===============================================================
``vqa_accuracy``              official VQAv2 accuracy; config ``official`` (default), ``lavis``, ``lmms``
``coco_caption``              BLEU-1..4, METEOR, ROUGE-L, CIDEr (+ SPICE offline), PTB tokenisation once
``retrieval_recall``          image-text retrieval R@1/5/10 and means, as LAVIS reports them
============================  ===============================================================

Use them by import, or through ``evaluate.load`` of the module file shipped here (no hub access)::

    >>> from evalkit.metrics.evaluate_modules.vqa_accuracy import VQAAccuracy   # doctest: +SKIP
    >>> VQAAccuracy().compute(predictions=["2"], references=[["2"] * 10])      # doctest: +SKIP
    {'accuracy': 100.0, 'n': 1, 'scores': [100.0]}
    >>> import evaluate
    >>> from evalkit.metrics.evaluate_modules import module_path
    >>> vqa = evaluate.load(module_path("vqa_accuracy"), "lavis")                # doctest: +SKIP

``evaluate`` is an optional dependency: ``pip install 'evalkit[evaluate]'``. Nothing here imports it.
"""

from __future__ import annotations

from pathlib import Path

from evalkit.core.errors import EvalkitError, closest_names

MODULES = ("vqa_accuracy", "coco_caption", "retrieval_recall")


def module_path(name: str) -> str:
    """The file to give ``evaluate.load`` for one of :data:`MODULES`."""
    if name not in MODULES:
        raise EvalkitError(f"unknown evaluate module {name!r}{closest_names(name, list(MODULES))}; "
                           f"one of {', '.join(MODULES)}")
    return str(Path(__file__).resolve().parent / f"{name}.py")
