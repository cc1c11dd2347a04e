"""The COCO caption metrics as one ``evaluate`` module: BLEU-1..4, METEOR, ROUGE-L, CIDEr (+ SPICE offline).

One module for all of them, so the Stanford PTB tokenizer runs once per ``compute`` (lmms-eval's seven
wrappers each re-run it). Source: :func:`evalkit.metrics.caption_metrics.score_captions`, which calls
pycocoevalcap's own scorers on the official tokens, so the numbers equal ``COCOEvalCap.evaluate()`` and
``evalkit score coco-caption --json``; all on the 0-100 scale (official value x 100). CIDEr is CIDEr-D with
its idf over the evaluated references, so it depends on the whole set: compute it over the full split.
Needs Java (PTB tokenizer, METEOR).

Example::

    >>> import evaluate                                                   # doctest: +SKIP
    >>> from evalkit.metrics.evaluate_modules import module_path          # doctest: +SKIP
    >>> coco = evaluate.load(module_path("coco_caption"))                 # doctest: +SKIP
    >>> coco.compute(predictions=["a man riding a horse"],
    ...              references=[["A man rides a horse.", "A person on a horse."]], spice="off")  # doctest: +SKIP
    {'BLEU-1': ..., 'BLEU-4': ..., 'METEOR': ..., 'ROUGE-L': ..., 'CIDEr': ..., 'n_images': 1, 'skipped': {...}}
"""

from __future__ import annotations

from evalkit.metrics.caption_metrics import score_captions
from evalkit.metrics.evaluate_modules.evaluate_dependency import STRING, datasets, evaluate

_CITATION = """\
@article{chen2015microsoft, title={Microsoft COCO Captions: Data Collection and Evaluation Server},
author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and
Doll{\\'a}r, Piotr and Zitnick, C. Lawrence}, journal={arXiv:1504.00325}, year={2015}}
"""

_DESCRIPTION = """\
COCO caption metrics exactly as the official pycocoevalcap COCOEvalCap computes them (PTB tokenisation,
BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr-D, and SPICE when its jars are present offline), on the 0-100 scale.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: one caption per image (strings; may be empty).
    references: per image, its reference captions (lists of strings, at least one).
    spice: "auto" (default: run SPICE when it can run offline), "on" (fail if it cannot), "off".
Returns:
    BLEU-1, BLEU-2, BLEU-3, BLEU-4, METEOR, ROUGE-L, CIDEr (and SPICE): corpus scores, 0-100.
    n_images: number of images; skipped: metric -> why it was not computed.
"""

class COCOCaption(evaluate.Metric):
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr (+ SPICE) as the official COCO caption evaluation, 0-100."""

    higher_is_better = True

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": STRING, "references": datasets.Sequence(STRING)}),
            reference_urls=["https://cocodataset.org/#captions-eval"],
            codebase_urls=["https://github.com/tylin/coco-caption", "https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(self, predictions, references, spice: str = "auto", timeout_s=None):
        # image ids are positions: the images are scored in input order, as an annotation file's order
        scores = score_captions(dict(enumerate(references)), dict(enumerate(predictions)), spice=spice,
                                timeout_s=timeout_s)
        return {**scores.corpus, "n_images": scores.n_images, "skipped": dict(scores.skipped)}


__all__ = ["COCOCaption"]
