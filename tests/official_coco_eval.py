"""The official COCO caption evaluation (pycocoevalcap's COCOEvalCap) as the reference scorer of the tests,
the fixture scripts and the benchmarks, with SPICE stood in for: it downloads Stanford CoreNLP models on first
use, which cannot happen offline, and no evalkit number depends on it here."""

from __future__ import annotations

import contextlib
from typing import Iterator


class NoSpice:
    """SPICE's place in COCOEvalCap: scores 0, computes nothing."""

    def compute_score(self, gts, res):
        return 0.0, [0.0] * len(gts)

    def method(self):
        return "SPICE"


@contextlib.contextmanager
def spice_stubbed() -> Iterator[object]:
    """pycocoevalcap.eval with NoSpice in place of Spice for the duration; yields the module."""
    import pycocoevalcap.eval as official

    saved = official.Spice
    official.Spice = NoSpice
    try:
        yield official
    finally:
        official.Spice = saved


def official_coco_eval(dataset: dict, results: list[dict], only_result_images: bool = False):
    """COCOEvalCap evaluated on a COCO-format annotation dict and a result list; returns the evaluator."""
    from pycocotools.coco import COCO

    with spice_stubbed() as official:
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        evaluator = official.COCOEvalCap(coco, coco.loadRes(results))
        if only_result_images:
            evaluator.params["image_id"] = evaluator.cocoRes.getImgIds()
        evaluator.evaluate()
    return evaluator
