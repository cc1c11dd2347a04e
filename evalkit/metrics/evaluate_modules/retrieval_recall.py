"""Image-text retrieval Recall@K as an ``evaluate`` module, computed as LAVIS / BLIP report it.

One example per image query: ``predictions`` is that image's row of the image-to-text score matrix (a score
for every text), ``references`` the indices of its own captions. Text queries rank images by
``t2i_scores`` (``[n_txt, n_img]``, e.g. BLIP-2's separately re-ranked matrix); without it they use the
transpose of the image rows (a symmetric similarity such as ITC alone).

Formula: ``R@K = 100 * #(rank of the ground truth < K) / #queries``; an image query's rank is the best rank
of any of its captions. ``txt_r_mean`` / ``img_r_mean`` average over ``ks``, ``r_mean`` is their mean.
Source: :func:`evalkit.metrics.retrieval_recall.retrieval_recall` (LAVIS ``RetrievalTask._report_metrics``,
with a deterministic order for tied scores), which `evalkit run retrieval-*` reports.

Example::

    >>> import evaluate                                                   # doctest: +SKIP
    >>> from evalkit.metrics.evaluate_modules import module_path          # doctest: +SKIP
    >>> recall = evaluate.load(module_path("retrieval_recall"))           # doctest: +SKIP
    >>> recall.compute(predictions=[[0.9, 0.1, 0.6], [0.3, 0.8, 0.5]],
    ...                references=[[0], [1, 2]], ks=[1])                   # doctest: +SKIP
    {'txt_r1': 100.0, 'txt_r_mean': 100.0, 'img_r1': 66.66..., 'img_r_mean': 66.66..., 'r_mean': 83.33...}
"""

from __future__ import annotations

import numpy as np

from evalkit.core.errors import EvalkitError
from evalkit.metrics.evaluate_modules.evaluate_dependency import datasets, evaluate
from evalkit.metrics.retrieval_recall import retrieval_recall

_CITATION = """\
@inproceedings{li2023blip2, title={BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image Encoders and
Large Language Models}, author={Li, Junnan and Li, Dongxu and Savarese, Silvio and Hoi, Steven}, booktitle={ICML},
year={2023}}
"""

_DESCRIPTION = """\
Text retrieval (image queries) and image retrieval (text queries) Recall@K on the 0-100 scale, as LAVIS reports
them for BLIP / BLIP-2 (COCO 5k, Flickr30k 1k).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: per image, its score for every text (the image's row of the image-to-text score matrix).
    references: per image, the indices of its captions among the texts.
    t2i_scores: optional [n_txt, n_img] scores for the text queries (default: the transpose of predictions).
    ks: recall cut-offs (default 1, 5, 10).
Returns:
    txt_r{k}, txt_r_mean, img_r{k}, img_r_mean, r_mean (0-100).
"""


class RetrievalRecall(evaluate.Metric):
    """Text and image retrieval Recall@K (LAVIS rules), 0-100."""

    higher_is_better = True

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("float64")),
                                        "references": datasets.Sequence(datasets.Value("int64"))}),
            reference_urls=["https://github.com/salesforce/LAVIS/blob/main/lavis/tasks/retrieval.py"],
            codebase_urls=["https://github.com/salesforce/LAVIS"],
        )

    def _compute(self, predictions, references, t2i_scores=None, ks=(1, 5, 10)):
        i2t = np.asarray(predictions, dtype=np.float64)
        if i2t.ndim != 2:
            raise EvalkitError("every image's prediction must score the same texts (one row per image)")
        txt2img = _caption_owners(references, i2t.shape[1])
        t2i = i2t.T if t2i_scores is None else t2i_scores
        return retrieval_recall(i2t, t2i, [list(c) for c in references], txt2img, ks=tuple(ks))


def _caption_owners(references, n_texts: int) -> np.ndarray:
    """Each text's image, from each image's caption indices: every text must be exactly one image's caption."""
    txt2img = np.full(n_texts, -1, dtype=np.int64)
    for image, captions in enumerate(references):
        for text in captions:
            if not 0 <= text < txt2img.shape[0]:
                raise EvalkitError(f"image {image} lists caption {text}, outside 0..{txt2img.shape[0] - 1}")
            if txt2img[text] >= 0:
                raise EvalkitError(f"caption {text} is listed for images {txt2img[text]} and {image}")
            txt2img[text] = image
    unlisted = np.flatnonzero(txt2img < 0)
    if unlisted.size:
        raise EvalkitError(f"{unlisted.size} texts are no image's caption (first: {int(unlisted[0])})")
    return txt2img


__all__ = ["RetrievalRecall"]
