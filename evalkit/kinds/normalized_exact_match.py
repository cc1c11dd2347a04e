"""Exact match after LAVIS's answer normalisation: GQA's zero-shot metric.

Source: LAVIS ``lavis/tasks/vqa.py`` ``GQATask._report_metrics`` @b345799: with ``inference_method ==
"generate"`` the prediction goes through ``VQAEval.processPunctuation`` then ``processDigitArticle``; the
ground-truth answer is compared as stored (no normalisation); accuracy = 100 x mean(pred == gt).

Example: prediction "The car." -> "car" matches the answer "car"; "Two" -> "2" does not match "two".

(The module is not called exact_match.py: tests/test_new_kind.py installs its own evalkit.kinds.exact_match.)
"""

from __future__ import annotations

from pathlib import Path

from evalkit.core.atomic_files import write_json_atomic
from evalkit.core.errors import EvalkitError
from evalkit.core.scores import ScoreResult
from evalkit.core.task_kind import PairedStatistics, RunJob, RunOutput, ScoreHistogram
from evalkit.kinds.generation import GenerationKind
from evalkit.kinds.vqa import question_statistics


def lavis_normalised(prediction: str) -> str:
    """LAVIS's VQAEval processPunctuation + processDigitArticle of a prediction (the 'lavis' VQA rules)."""
    from evalkit.metrics.vqa_accuracy import normalise_answer  # the one implementation of VQAEval's rules

    return normalise_answer(prediction, "lavis")


def exact_match(prediction: str, answer: str) -> float:
    """100.0 when the normalised prediction equals the answer as stored, else 0.0 (LAVIS GQATask)."""
    return 100.0 if lavis_normalised(prediction) == answer else 0.0


class NormalizedExactMatchKind(GenerationKind):
    """One reference answer per question; the prediction is normalised as LAVIS does, then compared."""

    name = "normalized-exact-match"
    headline_metrics = ("accuracy",)
    hub_task_type = "visual-question-answering"
    report_order = 2
    sample_score = "accuracy"
    sample_mean_metrics = ("accuracy",)
    histogram = ScoreHistogram("{task}: per-question exact match", "% of questions",
                               (("wrong", -1, 50), ("right", 50, 101)))
    references_label = "answer"
    shows_prompt = True

    def score(self, job: RunJob, output: RunOutput) -> ScoreResult:
        """Accuracy = mean per-question exact match (in %)."""
        per_sample = {}
        for sample in job.sample_set.samples:
            if not sample.references:
                raise EvalkitError(f"question {sample.id} has no reference answer (a test split cannot be scored)")
            prediction = output.predictions[sample.id].prediction
            per_sample[sample.id] = {"accuracy": exact_match(prediction, sample.references[0])}
        overall = sum(v["accuracy"] for v in per_sample.values()) / max(1, len(per_sample))
        details = {"normalisation": "LAVIS GQATask: processPunctuation + processDigitArticle of the prediction"}
        return ScoreResult({"accuracy": overall}, per_sample, "accuracy", details)

    def write_official_file(self, run_dir: Path, sample_set, predictions) -> Path:
        """``<split>_predictions.json``: ``[{"questionId": "...", "prediction": "..."}]`` (GQA's eval format)."""
        path = Path(run_dir) / f"{sample_set.identity.get('split', 'split')}_predictions.json"
        write_json_atomic(path, [{"questionId": s.id, "prediction": predictions[s.id].prediction}
                                 for s in sample_set.samples])
        return path

    def paired_statistics(self, base, cand, metrics: list[str]) -> PairedStatistics:
        """Questions are the unit of the paired bootstrap."""
        return question_statistics(base, cand, metrics, "mean of per-question exact match")


NORMALIZED_EXACT_MATCH = NormalizedExactMatchKind()
