"""Official VQAv2 file readers: golden numbers on 53 real val2014 questions, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evalkit.data.vqav2_files import load_annotations, load_predictions, load_questions, score_vqa_files
from evalkit.core.errors import EvalkitError
from evalkit.metrics.vqa_accuracy import VQA_METRIC_VARIANTS

FIXTURES = Path(__file__).parent / "fixtures" / "vqav2_53q"
QUESTIONS = FIXTURES / "v2_OpenEnded_mscoco_val2014_questions_53.json"
ANNOTATIONS = FIXTURES / "v2_mscoco_val2014_annotations_53.json"

# Golden values: the `accuracy` dict printed by the official GT-Vision-Lab/VQA evaluation
# (PythonHelperTools/vqaTools/vqa.py + PythonEvaluationTools/vqaEvaluation/vqaEval.py,
# commit a013f00), run UNMODIFIED under CPython 2.7.18 with VQAEval(vqa, vqaRes, n=2) on
# these fixture files (driver: fixtures/vqav2_53q/golden_tools/run_official.py). A lib2to3
# port under Python 3.11, LAVIS's vqa_tools and lmms-eval's vqav2 utils print the same.
_TYPES = ["are they", "does the", "does this", "how many", "how many people are", "is", "is it",
          "is the", "is there", "is there a", "is this", "is this a", "is this an", "none of the above",
          "what", "what are", "what brand", "what color is the", "what is the", "what is the person",
          "what room is", "what sport is", "where is the", "which"]
GOLDEN = {
    "emma_vqa_val2014_53q_pred_all_yes.json": {
        "overall": 32.26,
        "perAnswerType": {"number": 0.0, "other": 0.0, "yes/no": 74.35},
        "perQuestionType": dict(zip(_TYPES, [
            60.0, 0.0, 100.0, 0.0, 0.0, 100.0, 45.0, 70.0, 100.0, 100.0, 30.0, 100.0, 100.0, 100.0,
            0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])),
    },
    "emma_vqa_val2014_53q_pred_first_annotator.json": {
        "overall": 91.32,
        "perAnswerType": {"number": 91.82, "other": 86.32, "yes/no": 95.22},
        "perQuestionType": dict(zip(_TYPES, [
            100.0, 100.0, 100.0, 91.0, 100.0, 100.0, 100.0, 95.56, 100.0, 100.0, 30.0, 100.0, 100.0,
            100.0, 80.0, 100.0, 100.0, 86.0, 73.33, 100.0, 100.0, 100.0, 100.0, 30.0])),
    },
    "emma_vqa_val2014_53q_pred_multiple_choice_answer.json": {
        "overall": 97.74,
        "perAnswerType": {"number": 98.18, "other": 94.74, "yes/no": 100.0},
        "perQuestionType": dict(zip(_TYPES, [
            100.0, 100.0, 100.0, 98.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0,
            100.0, 80.0, 100.0, 100.0, 100.0, 93.33, 100.0, 100.0, 100.0, 100.0, 60.0])),
    },
}


@pytest.mark.parametrize("variant", VQA_METRIC_VARIANTS)
@pytest.mark.parametrize("predictions", sorted(GOLDEN))
def test_real_53_questions_match_official_script(predictions: str, variant: str) -> None:
    scores = score_vqa_files(QUESTIONS, ANNOTATIONS, FIXTURES / predictions, variant)
    assert scores.to_json() == GOLDEN[predictions]
    assert scores.n == 53 and scores.variant == variant


def test_loaders_read_the_official_files() -> None:
    questions = load_questions(QUESTIONS)
    annotations = load_annotations(ANNOTATIONS)
    predictions = load_predictions(FIXTURES / "emma_vqa_val2014_53q_pred_all_yes.json")
    assert len(questions) == len(annotations) == len(predictions) == 53
    assert questions[0] == {"image_id": 6818, "question": "What color is the wall?", "question_id": 6818000}
    assert set(predictions.values()) == {"yes"}
    assert all(len(a["answers"]) == 10 for a in annotations)


# ----------------------------------------------------------------------------- bad input
def write(tmp_path: Path, name: str, data: object) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def questions_doc(ids: list) -> dict:
    return {"questions": [{"image_id": 1, "question": "q?", "question_id": i} for i in ids]}


def annotations_doc(ids: list, n_answers: int = 10) -> dict:
    return {"annotations": [{"question_id": i, "question_type": "what", "answer_type": "other", "image_id": 1,
                             "answers": [{"answer": "a", "answer_id": k + 1} for k in range(n_answers)]}
                            for i in ids]}


def predictions_doc(ids: list) -> list:
    return [{"question_id": i, "answer": "a"} for i in ids]


def one_line_error(call, *args, match: str) -> str:
    with pytest.raises(EvalkitError, match=match) as info:
        call(*args)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def score_triple(tmp_path: Path, questions: object, annotations: object, predictions: object, variant="official"):
    return score_vqa_files(write(tmp_path, "q.json", questions), write(tmp_path, "a.json", annotations),
                           write(tmp_path, "p.json", predictions), variant)


def test_happy_path_on_small_files(tmp_path: Path) -> None:
    scores = score_triple(tmp_path, questions_doc([1, 2]), annotations_doc([2, 1]), predictions_doc([1, 2]))
    assert scores.overall == 100.0 and scores.n == 2


@pytest.mark.parametrize("loader", [load_questions, load_annotations, load_predictions])
def test_missing_file(tmp_path: Path, loader) -> None:
    message = one_line_error(loader, tmp_path / "nope.json", match="not found")
    assert "nope.json" in message


@pytest.mark.parametrize("loader", [load_questions, load_annotations, load_predictions])
def test_invalid_json(tmp_path: Path, loader) -> None:
    path = write(tmp_path, "broken.json", '{"questions": [1, 2')
    message = one_line_error(loader, path, match="not valid JSON")
    assert "broken.json" in message and "line 1" in message


def test_directory_and_non_utf8(tmp_path: Path) -> None:
    one_line_error(load_predictions, tmp_path, match="is a directory")
    path = tmp_path / "latin1.json"
    path.write_bytes(b'[{"question_id": 1, "answer": "caf\xe9"}]')
    one_line_error(load_predictions, path, match="not UTF-8")


@pytest.mark.parametrize("data, match", [
    ([], "must be a JSON object with a 'questions' list"),
    ({"questions": {}}, "'questions' list"),
    ({"questions": [3]}, "entry 0 is not an object"),
    ({"questions": [{"question_id": "1", "question": "q", "image_id": 1}]}, "entry 0 has no integer 'question_id'"),
    ({"questions": [{"question_id": 1.0, "question": "q", "image_id": 1}]}, "no integer 'question_id'"),
    ({"questions": [{"question_id": True, "question": "q", "image_id": 1}]}, "no integer 'question_id'"),
    ({"questions": [{"question_id": 1, "image_id": 1}]}, "question 1 has no string 'question'"),
    ({"questions": [{"question_id": 1, "question": "q"}]}, "question 1 has no integer 'image_id'"),
    (questions_doc([5, 6, 5, 7, 6]), r"2 duplicated question ids \(5, 6\)"),
])
def test_bad_questions_file(tmp_path: Path, data: object, match: str) -> None:
    message = one_line_error(load_questions, write(tmp_path, "questions.json", data), match=match)
    assert "questions.json" in message


@pytest.mark.parametrize("data, match", [
    ([], "'annotations' list"),
    ({"annotations": ["x"]}, "entry 0 is not an object"),
    ({"annotations": [{"question_id": None}]}, "entry 0 has no integer 'question_id'"),
    ({"annotations": [{"question_id": 4, "question_type": 7, "answer_type": "other", "answers": []}]},
     "question 4 has no string 'question_type'"),
    ({"annotations": [{"question_id": 4, "question_type": "what", "answer_type": None, "answers": []}]},
     "no string 'answer_type'"),
    ({"annotations": [{"question_id": 4, "question_type": "what", "answer_type": "o"}]}, "question 4 has no 'answers' list"),
    (annotations_doc([4], n_answers=9), "question 4 has 9 answers, VQAv2 annotations have exactly 10"),
    (annotations_doc([4], n_answers=11), "question 4 has 11 answers"),
    ({"annotations": [{**annotations_doc([4])["annotations"][0], "answers": [{"answer": 1}] * 10}]},
     "question 4 has an answer without a string 'answer'"),
    (annotations_doc([4, 4]), r"1 duplicated question ids \(4\)"),
])
def test_bad_annotations_file(tmp_path: Path, data: object, match: str) -> None:
    message = one_line_error(load_annotations, write(tmp_path, "annotations.json", data), match=match)
    assert "annotations.json" in message


@pytest.mark.parametrize("data, match", [
    ({"question_id": 1, "answer": "a"}, "must be a JSON list .* official result format"),
    ({"results": []}, "must be a JSON list"),
    (["a"], "entry 0 is not an object"),
    ([{"answer": "a"}], r"entry 0 has a non-integer 'question_id' \(None\)"),
    ([{"question_id": "12", "answer": "a"}], r"non-integer 'question_id' \('12'\)"),
    ([{"question_id": 12.0, "answer": "a"}], r"non-integer 'question_id' \(12.0\)"),
    ([{"question_id": 12}], "question 12 has no string 'answer'"),
    ([{"question_id": 12, "answer": 3}], "question 12 has no string 'answer'"),
    (predictions_doc([1, 2, 1, 1, 3, 2]), r"3 duplicated question ids \(1, 2\)"),
])
def test_bad_predictions_file(tmp_path: Path, data: object, match: str) -> None:
    message = one_line_error(load_predictions, write(tmp_path, "preds.json", data), match=match)
    assert "preds.json" in message


def test_questions_without_annotations(tmp_path: Path) -> None:
    message = one_line_error(score_triple, tmp_path, questions_doc([1, 2, 3]), annotations_doc([1]),
                             predictions_doc([1, 2, 3]), match=r"no annotation for 2 of the 3 questions")
    assert "a.json" in message and "(2, 3)" in message


def test_annotations_without_questions(tmp_path: Path) -> None:
    message = one_line_error(score_triple, tmp_path, questions_doc([1]), annotations_doc([1, 8, 9]),
                             predictions_doc([1]), match=r"2 annotations whose question is not in")
    assert "(8, 9)" in message


def test_predictions_for_unknown_questions(tmp_path: Path) -> None:
    message = one_line_error(score_triple, tmp_path, questions_doc([1, 2]), annotations_doc([1, 2]),
                             predictions_doc([1, 2, 99]), match=r"1 question ids that are not in")
    assert "p.json" in message and "(99)" in message


def test_questions_without_prediction_names_count_and_first_ids(tmp_path: Path) -> None:
    ids = list(range(1, 21))
    message = one_line_error(score_triple, tmp_path, questions_doc(ids), annotations_doc(ids),
                             predictions_doc([1, 2, 3]), match="no prediction for 17 of the 20 questions")
    assert "first ids: 4, 5, 6, 7, 8, ... (12 more)" in message and "p.json" in message


def test_unknown_variant_is_rejected_before_reading(tmp_path: Path) -> None:
    one_line_error(score_vqa_files, tmp_path / "q", tmp_path / "a", tmp_path / "p", "eval_ai",
                   match="unknown VQA metric variant 'eval_ai'; valid variants: official, lavis, lmms")


def test_annotations_without_types_count_as_unknown(tmp_path):
    answers = [{"answer": "net", "answer_id": i + 1} for i in range(10)]
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"annotations": [{"question_id": 4, "answers": answers}]}))
    (ann,) = load_annotations(path)
    assert ann["question_type"] == "unknown" and ann["answer_type"] == "unknown"
