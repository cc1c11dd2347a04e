"""VQAv2 accuracy as an ``evaluate`` module: the official GT-Vision-Lab rules, bit for bit.

Formula (Antol et al. 2015), for a prediction p and the human answers h_1..h_n (n = 10 in VQAv2), after
the official answer normalisation::

    acc(p) = 1/n * sum_i min(1, #{j != i : h_j == p} / 3)        accuracy = round(100 * mean(acc), 2)

Source: :func:`evalkit.metrics.vqa_accuracy.score_vqa` (official ``vqaEval.py``, Python 2 quirks included;
config ``lavis`` = LAVIS ``vqa_eval.py``, ``lmms`` = lmms-eval ``vqav2/utils.py``). Equal to
``evalkit score vqav2 --json`` on the same questions, in the same order.

Example::

    >>> import evaluate                                                   # doctest: +SKIP
    >>> from evalkit.metrics.evaluate_modules import module_path          # doctest: +SKIP
    >>> vqa = evaluate.load(module_path("vqa_accuracy"))                  # doctest: +SKIP
    >>> vqa.compute(predictions=["2", "yes"], references=[["2"] * 10, ["no"] * 7 + ["yes"] * 3])  # doctest: +SKIP
    {'accuracy': 95.0, 'n': 2, 'scores': [100.0, 90.0]}
"""

from __future__ import annotations

from evalkit.metrics.evaluate_modules.evaluate_dependency import STRING, datasets, evaluate
from evalkit.metrics.vqa_accuracy import VQA_METRIC_VARIANTS, check_vqa_variant, score_vqa

_CITATION = """\
@inproceedings{antol2015vqa, title={VQA: Visual Question Answering}, author={Antol, Stanislaw and Agrawal, Aishwarya
and Lu, Jiasen and Mitchell, Margaret and Batra, Dhruv and Zitnick, C. Lawrence and Parikh, Devi},
booktitle={ICCV}, year={2015}}
"""

_DESCRIPTION = """\
VQAv2 accuracy (0-100): a prediction counts as right in proportion to how many of the ten human answers it
matches (min(1, matches/3), averaged over the ten leave-one-out subsets), after the official normalisation.
Config name = variant: "official" (GT-Vision-Lab vqaEval.py under Python 2, the default), "lavis", "lmms".
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: list of answers (strings).
    references: per prediction, either the list of human answers (strings), or a dict
        {"answers": [...], "question_type": "what color is the", "answer_type": "other"} to also get the
        accuracy per answer type and per question type.
Returns:
    accuracy: overall accuracy, round(100 * mean, 2) as the variant rounds it.
    n: number of questions.
    scores: per-question accuracy (0-100, unrounded), in input order.
    accuracy_per_answer_type, accuracy_per_question_type: only when the references carry the types.
"""

class VQAAccuracy(evaluate.Metric):
    """The official VQAv2 accuracy (config: ``official`` | ``lavis`` | ``lmms``), 0-100."""

    higher_is_better = True

    def _info(self) -> evaluate.MetricInfo:
        self.variant = "official" if self.config_name == "default" else check_vqa_variant(self.config_name)
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # the typed form first: a dict would also pass as a list of strings (its keys)
            features=[
                datasets.Features({"predictions": STRING,
                                   "references": {"answers": datasets.Sequence(STRING), "question_type": STRING,
                                                  "answer_type": STRING}}),
                datasets.Features({"predictions": STRING, "references": datasets.Sequence(STRING)}),
            ],
            reference_urls=["https://visualqa.org/evaluation.html",
                            "https://github.com/GT-Vision-Lab/VQA/blob/master/PythonEvaluationTools/"
                            "vqaEvaluation/vqaEval.py"],
            codebase_urls=["https://github.com/GT-Vision-Lab/VQA"],
        )

    def _compute(self, predictions, references):
        typed = bool(references) and isinstance(references[0], dict)
        annotations = []
        for index, reference in enumerate(references):
            answers = reference["answers"] if typed else reference
            annotations.append({
                "question_id": index,
                "question_type": reference["question_type"] if typed else "",
                "answer_type": reference["answer_type"] if typed else "",
                # distinct answer ids, as in every official file: leave-one-out removes one answer by position
                "answers": [{"answer": answer, "answer_id": k + 1} for k, answer in enumerate(answers)],
            })
        scores = score_vqa(annotations, dict(enumerate(predictions)), variant=self.variant)
        result = {"accuracy": scores.overall, "n": scores.n,
                  "scores": [scores.per_question[i] for i in range(len(annotations))]}
        if typed:
            result["accuracy_per_answer_type"] = dict(scores.per_answer_type)
            result["accuracy_per_question_type"] = dict(scores.per_question_type)
        return result


__all__ = ["VQAAccuracy", "VQA_METRIC_VARIANTS"]
