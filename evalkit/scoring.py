"""Turns a run's predictions into metrics with the task kind's official scorer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evalkit.data.sample_set import SampleSet
from evalkit.errors import EvalkitError
from evalkit.samples import Prediction


@dataclass
class ScoreResult:
    """Corpus metrics (0-100), per-sample scores, and anything else worth recording."""

    metrics: dict[str, float]
    per_sample: dict[str, dict[str, float]]
    headline: str
    details: dict[str, Any] = field(default_factory=dict)
    scale: str = "0-100"


def score_predictions(kind: str, sample_set: SampleSet, predictions: dict[str, Prediction],
                      vqa_metric: str = "official") -> ScoreResult:
    """Score every sample of the set; a missing prediction is an error, never a silent zero."""
    missing = [s.id for s in sample_set.samples if s.id not in predictions]
    if missing:
        raise EvalkitError(f"{len(missing)} samples have no prediction (first: {', '.join(missing[:3])})")
    if kind == "caption":
        return _score_captions(sample_set, predictions)
    if kind == "vqa":
        return _score_vqa(sample_set, predictions, vqa_metric)
    raise EvalkitError(f"no scorer for task kind {kind!r}")


def _score_captions(sample_set: SampleSet, predictions: dict[str, Prediction]) -> ScoreResult:
    from evalkit.metrics.caption_metrics import score_captions

    references = {s.id: list(s.references) for s in sample_set.samples}
    # a failed sample keeps an empty caption (it scores 0) and is counted; the run is then not reportable
    answers = {s.id: predictions[s.id].prediction for s in sample_set.samples}
    scores = score_captions(references, answers)
    per_sample = {str(k): v for k, v in scores.per_image.items()}
    details = {"skipped_metrics": dict(scores.skipped)}
    return ScoreResult(dict(scores.corpus), per_sample, "CIDEr", details, scores.scale)


def _score_vqa(sample_set: SampleSet, predictions: dict[str, Prediction], variant: str) -> ScoreResult:
    from evalkit.metrics.vqa_accuracy import score_vqa

    by_id = sample_set.annotations  # question_id (int) -> official annotation entry
    annotations = [by_id[int(s.id)] for s in sample_set.samples]
    answers = {int(s.id): predictions[s.id].prediction for s in sample_set.samples}
    scores = score_vqa(annotations, answers, variant=variant)
    metrics = {"accuracy": scores.overall}
    metrics.update({f"accuracy/{t}": v for t, v in sorted(scores.per_answer_type.items())})
    per_sample = {str(q): {"accuracy": v} for q, v in scores.per_question.items()}
    details = {"perAnswerType": scores.per_answer_type, "perQuestionType": scores.per_question_type,
               "vqa_metric": variant}
    return ScoreResult(metrics, per_sample, "accuracy", details)
