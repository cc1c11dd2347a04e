"""Readers for the official VQAv2 files, validated, with one-line errors.

Files (https://visualqa.org/download.html):

* questions   ``v2_OpenEnded_mscoco_<split>_questions.json``:
  ``{"questions": [{"image_id", "question", "question_id"}, ...], "info", ...}``
* annotations ``v2_mscoco_<split>_annotations.json``:
  ``{"annotations": [{"question_id", "question_type", "answer_type",
  "answers": [{"answer", "answer_confidence", "answer_id"} x 10], ...}, ...], ...}``
* predictions, the official result format: ``[{"question_id": int, "answer": str}, ...]``

Rules (every violation raises :class:`~evalkit.core.errors.EvalkitError` with one line that
names the file): question ids must be integers and unique in each file; every
annotation must have exactly 10 answers (all VQAv2 annotations do; the accuracy
formula's "/3 over the other 9" assumes it); questions and annotations must cover the
same ids; every prediction must belong to a question and every question must have a
prediction (the official ``loadRes`` asserts the same set equality).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkit.core.errors import EvalkitError
from evalkit.data.json_files import is_int, read_json_file
from evalkit.metrics.id_preview import preview_ids
from evalkit.metrics.vqa_accuracy import VQAScores, check_vqa_variant, score_vqa

ANSWERS_PER_QUESTION = 10


def _entries(data: Any, key: str, path: str | Path, what: str) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise EvalkitError(f"{what} file {path} must be a JSON object with a {key!r} list")
    return data[key]


def _check_unique(ids: list[Any], path: str | Path, what: str) -> None:
    if len(set(ids)) != len(ids):
        seen: set[Any] = set()
        dups = [i for i in ids if i in seen or seen.add(i)]
        raise EvalkitError(f"{what} file {path} has {len(dups)} duplicated question ids "
                           f"({preview_ids(list(dict.fromkeys(dups)))})")


def load_questions(path: str | Path) -> list[dict]:
    """Question entries of an official questions file, in file order."""
    what = "VQA questions"
    questions = _entries(read_json_file(path, what), "questions", path, what)
    for index, q in enumerate(questions):
        if not isinstance(q, dict):
            raise EvalkitError(f"{what} file {path}: entry {index} is not an object")
        if not is_int(q.get("question_id")):
            raise EvalkitError(f"{what} file {path}: entry {index} has no integer 'question_id'")
        if not isinstance(q.get("question"), str):
            raise EvalkitError(f"{what} file {path}: question {q['question_id']} has no string 'question'")
        if not is_int(q.get("image_id")):
            raise EvalkitError(f"{what} file {path}: question {q['question_id']} has no integer 'image_id'")
    _check_unique([q["question_id"] for q in questions], path, what)
    return questions


def load_annotations(path: str | Path) -> list[dict]:
    """Annotation entries of an official annotations file, in file order."""
    what = "VQA annotations"
    annotations = _entries(read_json_file(path, what), "annotations", path, what)
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise EvalkitError(f"{what} file {path}: entry {index} is not an object")
        qid = ann.get("question_id")
        if not is_int(qid):
            raise EvalkitError(f"{what} file {path}: entry {index} has no integer 'question_id'")
        for key in ("question_type", "answer_type"):
            # Documented rule: an annotation without a type (some trimmed official-format files omit them)
            # counts under "unknown" in the per-type tables; a type that is present must be a string.
            ann.setdefault(key, "unknown")
            if not isinstance(ann.get(key), str):
                raise EvalkitError(f"{what} file {path}: question {qid} has no string {key!r}")
        answers = ann.get("answers")
        if not isinstance(answers, list):
            raise EvalkitError(f"{what} file {path}: question {qid} has no 'answers' list")
        if len(answers) != ANSWERS_PER_QUESTION:
            raise EvalkitError(f"{what} file {path}: question {qid} has {len(answers)} answers, "
                               f"VQAv2 annotations have exactly {ANSWERS_PER_QUESTION}")
        if not all(isinstance(a, dict) and isinstance(a.get("answer"), str) for a in answers):
            raise EvalkitError(f"{what} file {path}: question {qid} has an answer without a string 'answer'")
    _check_unique([a["question_id"] for a in annotations], path, what)
    return annotations


def load_predictions(path: str | Path) -> dict[int, str]:
    """Official result format ``[{"question_id": int, "answer": str}, ...]`` -> {id: answer}."""
    what = "VQA predictions"
    data = read_json_file(path, what)
    if not isinstance(data, list):
        raise EvalkitError(f"{what} file {path} must be a JSON list of "
                           '{"question_id": int, "answer": str} objects (the official result format)')
    predictions: dict[int, str] = {}
    duplicated: list[int] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise EvalkitError(f"{what} file {path}: entry {index} is not an object")
        qid = entry.get("question_id")
        if not is_int(qid):
            raise EvalkitError(f"{what} file {path}: entry {index} has a non-integer 'question_id' ({qid!r})")
        answer = entry.get("answer")
        if not isinstance(answer, str):
            raise EvalkitError(f"{what} file {path}: question {qid} has no string 'answer'")
        if qid in predictions:
            duplicated.append(qid)
        predictions[qid] = answer
    if duplicated:
        raise EvalkitError(f"{what} file {path} has {len(duplicated)} duplicated question ids "
                           f"({preview_ids(list(dict.fromkeys(duplicated)))})")
    return predictions


def score_vqa_files(questions_path: str | Path, annotations_path: str | Path,
                    predictions_path: str | Path, variant: str = "official") -> VQAScores:
    """Load and cross-check the three official files, then :func:`score_vqa` them."""
    check_vqa_variant(variant)  # reject an unknown variant before reading large files
    question_ids = [q["question_id"] for q in load_questions(questions_path)]  # ids are all we need
    annotations = load_annotations(annotations_path)
    predictions = load_predictions(predictions_path)

    known = set(question_ids)
    annotated = {a["question_id"] for a in annotations}
    unannotated = [qid for qid in question_ids if qid not in annotated]
    if unannotated:
        raise EvalkitError(f"VQA annotations file {annotations_path} has no annotation for "
                           f"{len(unannotated)} of the {len(question_ids)} questions in "
                           f"{questions_path} ({preview_ids(unannotated)})")
    orphans = [a["question_id"] for a in annotations if a["question_id"] not in known]
    if orphans:
        raise EvalkitError(f"VQA annotations file {annotations_path} has {len(orphans)} annotations "
                           f"whose question is not in {questions_path} ({preview_ids(orphans)})")
    unknown = [qid for qid in predictions if qid not in known]
    if unknown:
        raise EvalkitError(f"VQA predictions file {predictions_path} has {len(unknown)} question ids "
                           f"that are not in {questions_path} ({preview_ids(unknown)})")
    unanswered = [qid for qid in question_ids if qid not in predictions]
    if unanswered:
        raise EvalkitError(f"VQA predictions file {predictions_path} has no prediction for "
                           f"{len(unanswered)} of the {len(question_ids)} questions "
                           f"(first ids: {preview_ids(unanswered)})")
    return score_vqa(annotations, predictions, variant)
