"""VQAv2 accuracy: golden values from the reference scripts, and one test per quirk.

Expected numbers in the quirk tests are worked out by hand from the rules of the official
GT-Vision-Lab vqaEval.py (the arithmetic is in each comment); the synthetic-fixture tests
compare with outputs of the reference code itself (see fixtures/vqav2_53q/golden_tools).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from evalkit.core.errors import EvalkitError
from evalkit.metrics.vqa_accuracy import (
    VQA_METRIC_VARIANTS,
    VQAScores,
    question_accuracy,
    score_vqa,
)

FIXTURES = Path(__file__).parent / "fixtures" / "vqav2_53q"


def ann(qid: int, answers: list[str], qtype: str = "what", atype: str = "other") -> dict:
    return {"question_id": qid, "question_type": qtype, "answer_type": atype, "image_id": 1,
            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                        for i, a in enumerate(answers)]}


# ----------------------------------------------------------------------------- golden fixture
@pytest.fixture(scope="module")
def synthetic() -> dict:
    return json.loads((FIXTURES / "synthetic_tricky_cases.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("variant", VQA_METRIC_VARIANTS)
def test_synthetic_cases_match_reference_code_per_question(synthetic: dict, variant: str) -> None:
    preds = {p["question_id"]: p["answer"] for p in synthetic["predictions"]}
    scores = score_vqa(synthetic["annotations"], preds, variant)
    expected = synthetic["expected"][variant]["perQuestion"]
    assert len(expected) == len(synthetic["annotations"]) == scores.n
    mismatches = {q: (scores.per_question[int(q)], 100 * acc) for q, acc in expected.items()
                  if scores.per_question[int(q)] != 100 * acc}  # bit-for-bit, not approx
    assert not mismatches


def test_synthetic_cases_match_official_aggregates(synthetic: dict) -> None:
    preds = {p["question_id"]: p["answer"] for p in synthetic["predictions"]}
    assert score_vqa(synthetic["annotations"], preds).to_json() == synthetic["expected"]["official"]["accuracy"]


def test_synthetic_cases_match_lavis_aggregates(synthetic: dict) -> None:
    preds = {p["question_id"]: p["answer"] for p in synthetic["predictions"]}
    assert score_vqa(synthetic["annotations"], preds, "lavis").to_json() == synthetic["expected"]["lavis"]["accuracy"]


def test_synthetic_cases_match_lmms_means(synthetic: dict) -> None:
    # lmms-eval reports an unrounded 0-1 mean (sum/len); evalkit reports round(100 * mean, 2).
    preds = {p["question_id"]: p["answer"] for p in synthetic["predictions"]}
    scores = score_vqa(synthetic["annotations"], preds, "lmms")
    means = synthetic["expected"]["lmms"]["mean"]
    assert scores.overall == round(100 * means["overall"], 2)
    assert scores.per_answer_type == {k: round(100 * v, 2) for k, v in means["perAnswerType"].items()}
    assert scores.per_question_type == {k: round(100 * v, 2) for k, v in means["perQuestionType"].items()}


def test_synthetic_cases_make_the_variants_disagree(synthetic: dict) -> None:
    expected = synthetic["expected"]
    official = expected["official"]["perQuestion"]
    for variant in ("lavis", "lmms"):
        assert sum(official[q] != v for q, v in expected[variant]["perQuestion"].items()) > 20


# ----------------------------------------------------------------------------- quirks
def test_all_identical_answers_are_not_normalised() -> None:
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0
    assert question_accuracy("yes.", ["yes"] * 10) == 0.0
    assert question_accuracy("yes", ["yes"] * 10) == 1.0
    assert question_accuracy("2", ["two"] * 10) == 0.0
    # one differing answer switches normalisation on for everything
    assert question_accuracy("Yes", ["yes"] * 9 + ["Yes"]) == 1.0
    assert question_accuracy("2", ["two"] * 9 + ["2"]) == 1.0


def test_newlines_tabs_and_ends_are_always_cleaned() -> None:
    assert question_accuracy(" yes\n", ["yes"] * 10) == 1.0
    assert question_accuracy("yes", ["\tyes "] * 10) == 1.0
    # "two\tdogs" -> "two dogs" -> "2 dogs"
    assert question_accuracy("two\tdogs", ["2 dogs"] * 9 + ["x"]) == 1.0


def test_number_words() -> None:
    assert question_accuracy("two", ["2"] * 9 + ["3"]) == 1.0
    # none/zero -> 0: 6 of 10 match, every answer sees >= 3 others matching
    assert question_accuracy("none", ["0"] * 3 + ["zero"] * 3 + ["nothing"] * 4) == 1.0
    # "eleven" is not in the table: only the "11" answer matches -> 9 x 1/3 / 10
    assert question_accuracy("11", ["eleven"] * 9 + ["11"]) == pytest.approx(0.3)


def test_articles_are_dropped() -> None:
    assert question_accuracy("dog", ["the dog"] * 4 + ["a dog"] * 3 + ["dogs"] * 3) == 1.0
    assert question_accuracy("an apple", ["apple"] * 9 + ["pear"]) == 1.0
    assert question_accuracy("dog", ["the dog"] * 10) == 0.0  # identical: no normalisation


def test_contractions() -> None:
    # "dont" -> "don't": 3 matches -> 3 x 2/3 + 7 x 1 = 9 -> 0.9
    assert question_accuracy("dont", ["don't"] * 3 + ["do not"] * 7) == pytest.approx(0.9)
    # the table maps "somebody'd" to "somebodyd" (sic)
    assert question_accuracy("somebody'd", ["somebodyd"] * 9 + ["x"]) == 1.0
    # capitalised keys ("Im") never match after lowercasing: "Im" -> "im" != "i'm"
    assert question_accuracy("Im", ["I'm"] * 9 + ["i'm"]) == 0.0


def test_punctuation_space_or_delete() -> None:
    assert question_accuracy("t-shirt", ["t shirt"] * 4 + ["tshirt"] * 6) == 1.0  # "-" -> " "
    assert question_accuracy("t-shirt", ["tshirt"] * 9 + ["t shirt"]) == pytest.approx(0.3)
    assert question_accuracy("red, white", ["red white"] * 9 + ["x"]) == 1.0  # ", " -> delete
    assert question_accuracy("red,white", ["redwhite"] * 9 + ["x"]) == 0.0   # "," -> " "
    # " -" anywhere in the original text deletes every "-"
    assert question_accuracy("a-b -c", ["ab c"] * 9 + ["x"]) == 1.0
    # the test looks at the ORIGINAL text: "-" becoming a space does not make "?" space-adjacent
    assert question_accuracy("ab-?cd?ef", ["ab cd ef"] * 9 + ["x"]) == 1.0


def test_digit_comma_digit_deletes_all_punctuation() -> None:
    assert question_accuracy("1,000", ["1000"] * 9 + ["x"]) == 1.0
    # with a digit-comma-digit anywhere, "-" is deleted too: "1,2-3" -> "123", not "1 2 3"
    assert question_accuracy("1,2-3", ["123"] * 9 + ["x"]) == 1.0
    # official needs exactly one comma between digits; lmms-eval's pattern takes ",+"
    assert question_accuracy("1,,2", ["12"] * 9 + ["x"]) == 0.0
    assert question_accuracy("1,,2", ["12"] * 9 + ["x"], "lmms") == 1.0


def test_periods_and_the_32_limit() -> None:
    assert question_accuracy("2.", ["2"] * 9 + ["x"]) == 1.0
    assert question_accuracy("1.5", ["1.5"] * 9 + ["15"]) == 1.0     # followed by a digit: kept
    assert question_accuracy("1.a", ["1a"] * 9 + ["x"]) == 1.0       # broken look-behind: removed
    assert question_accuracy("a" + "." * 32, ["a"] * 9 + ["b"]) == 1.0
    assert question_accuracy("a" + "." * 33, ["a"] * 9 + ["b"]) == 0.0  # 33rd period survives
    # both sides keep their 33rd period: "a." == "a."
    assert question_accuracy("a" + "." * 33, ["a" + "." * 33] * 9 + ["b"]) == 1.0


def test_leave_one_out_by_position_with_duplicates() -> None:
    assert question_accuracy("a", ["a"] + ["b"] * 9) == pytest.approx(0.3)            # 9 x 1/3
    assert question_accuracy("a", ["a"] * 2 + ["b"] * 8) == pytest.approx(0.6)        # 2 x 1/3 + 8 x 2/3
    assert question_accuracy("a", ["a"] * 3 + ["b"] * 7) == pytest.approx(0.9)        # 3x2/3 + 7
    assert question_accuracy("a", ["a"] * 4 + ["b"] * 6) == 1.0
    assert question_accuracy("c", ["a"] * 4 + ["b"] * 6) == 0.0


def test_leave_one_out_by_dict_equality_without_answer_ids() -> None:
    # Identical answer dicts are all removed together: the 3 "a" answers see 0 matches,
    # the 7 "b" answers see 3 -> 7/10, not the positional 0.9.
    entry = {"question_id": 1, "question_type": "what", "answer_type": "other",
             "answers": [{"answer": "a"}] * 3 + [{"answer": "b"}] * 7}
    assert score_vqa([entry], {1: "a"}).per_question[1] == pytest.approx(70.0)
    entry["answers"] = [{"answer": "a", "answer_id": i} for i in range(3)] + [{"answer": "b"}] * 7
    assert score_vqa([entry], {1: "a"}).per_question[1] == pytest.approx(90.0)


def test_python2_text_semantics_in_official_variant() -> None:
    assert question_accuracy("İstanbul", ["istanbul"] * 9 + ["x"]) == 1.0   # py2: İ -> i
    assert question_accuracy("İstanbul", ["istanbul"] * 9 + ["x"], "lmms") == 0.0
    assert question_accuracy("a\u180eb", ["a b"] * 9 + ["x"]) == 1.0      # py2: U+180E is a space
    assert question_accuracy("a\u180eb", ["a b"] * 9 + ["x"], "lmms") == 0.0
    # \d is ASCII-only in Python 2: Arabic-Indic 3,4 has no digit-comma-digit -> "٣ ٤"
    assert question_accuracy("\u0663,\u0664", ["\u0663\u0664"] * 9 + ["x"]) == 0.0
    assert question_accuracy("\u0663,\u0664", ["\u0663\u0664"] * 9 + ["x"], "lmms") == 1.0


def test_rounding_ties_go_away_from_zero_in_official_only() -> None:
    # 16 questions: one with "cat" x3 at positions 0-2 (acc 0.9), fifteen with 0 -> 5.625 exactly.
    anns = [ann(1, ["cat"] * 3 + ["dog", "cow", "pig", "hen", "fox", "owl", "elk"])]
    anns += [ann(q, ["dog", "cow", "pig", "hen", "fox", "owl", "elk", "ram", "yak", "emu"]) for q in range(2, 17)]
    preds = {q: "cat" for q in range(1, 17)}
    assert score_vqa(anns, preds).overall == 5.63          # Python 2 round(5.625, 2)
    assert score_vqa(anns, preds, "lavis").overall == 5.62  # Python 3 round(5.625, 2)


def test_rounding_to_two_decimals_per_type() -> None:
    anns = [ann(1, ["a"] * 10, "how many", "number"), ann(2, ["b"] * 10, "how many", "number"),
            ann(3, ["c"] * 10, "what", "other")]
    scores = score_vqa(anns, {1: "a", 2: "x", 3: "x"})
    assert scores.overall == 33.33
    assert scores.per_question_type == {"how many": 50.0, "what": 0.0}
    assert scores.per_answer_type == {"number": 50.0, "other": 0.0}
    assert scores.per_question == {1: 100.0, 2: 0.0, 3: 0.0}
    assert scores.to_json() == {"overall": 33.33, "perAnswerType": {"number": 50.0, "other": 0.0},
                                "perQuestionType": {"how many": 50.0, "what": 0.0}}
    assert (scores.n, scores.variant) == (3, "official")


# ----------------------------------------------------------------------------- variants
def test_lavis_normalises_prediction_always_and_answers_only_for_punctuation() -> None:
    assert question_accuracy("Yes", ["yes"] * 10, "lavis") == 1.0        # official: 0
    assert question_accuracy("two", ["two"] * 9 + ["three"]) == 1.0
    assert question_accuracy("two", ["two"] * 9 + ["three"], "lavis") == 0.0   # "2" vs "two"
    assert question_accuracy("yes", ["yes "] * 9 + ["no"]) == 1.0
    assert question_accuracy("yes", ["yes "] * 9 + ["no"], "lavis") == 0.0     # answers not stripped
    # a trailing "?" becomes a space that LAVIS never strips from the human answers: "red "
    assert question_accuracy("red", ["red?"] * 9 + ["x"]) == 1.0
    assert question_accuracy("red", ["red?"] * 9 + ["x"], "lavis") == 0.0
    assert question_accuracy("t-shirt", ["t-shirt"] * 9 + ["x"], "lavis") == 1.0  # both "t shirt"


def test_lmms_always_normalises_both_sides() -> None:
    assert question_accuracy("Yes", ["yes"] * 10, "lmms") == 1.0
    assert question_accuracy("2", ["two"] * 10, "lmms") == 1.0
    assert question_accuracy("two", ["two"] * 9 + ["three"], "lmms") == 1.0


def test_variants_agree_on_plain_answers() -> None:
    for variant in VQA_METRIC_VARIANTS:
        assert question_accuracy("blue", ["blue"] * 4 + ["navy"] * 6, variant) == 1.0
        assert question_accuracy("red", ["blue"] * 4 + ["navy"] * 6, variant) == 0.0


def test_unknown_variant_names_the_valid_ones() -> None:
    with pytest.raises(EvalkitError, match="official, lavis, lmms"):
        question_accuracy("a", ["a"] * 10, "vlmeval")
    with pytest.raises(EvalkitError, match="'OFFICIAL'"):
        score_vqa([ann(1, ["a"] * 10)], {1: "a"}, "OFFICIAL")


# ----------------------------------------------------------------------------- score_vqa contract
def test_score_vqa_does_not_mutate_inputs(synthetic: dict) -> None:
    anns = synthetic["annotations"]
    preds = {p["question_id"]: p["answer"] for p in synthetic["predictions"]}
    before = (copy.deepcopy(anns), dict(preds))
    for variant in VQA_METRIC_VARIANTS:
        score_vqa(anns, preds, variant)
    assert (anns, preds) == before


def test_score_vqa_is_batch_invariant(synthetic: dict) -> None:
    anns = [a for a in synthetic["annotations"]
            if len({d.get("answer_id") for d in a["answers"]}) == len(a["answers"])]
    preds = {p["question_id"]: p["answer"] for p in synthetic["predictions"]}
    whole = score_vqa(anns, {a["question_id"]: preds[a["question_id"]] for a in anns})
    for a in anns[:200]:
        one = score_vqa([a], {a["question_id"]: preds[a["question_id"]]})
        assert one.per_question == {a["question_id"]: whole.per_question[a["question_id"]]}
        assert 100 * question_accuracy(preds[a["question_id"]], [d["answer"] for d in a["answers"]]) \
            == whole.per_question[a["question_id"]]


def test_scores_are_frozen() -> None:
    scores = score_vqa([ann(1, ["a"] * 10)], {1: "a"})
    assert isinstance(scores, VQAScores)
    with pytest.raises(AttributeError):
        scores.overall = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("anns, preds, message", [
    ([], {}, "no VQA annotations"),
    ([ann(1, ["a"] * 10)], {}, r"no VQA prediction for 1 of 1 questions \(question ids 1\)"),
    ([ann(1, ["a"] * 10)], {1: "a", 7: "b"}, r"1 VQA predictions .* not in the annotations \(7\)"),
    ([ann(1, ["a"] * 10), ann(1, ["b"] * 10)], {1: "a"}, "question id 1 appears twice"),
    ([ann(1, ["a"] * 10)], {1: 3}, "not a string"),
    ([{"question_id": 1, "question_type": "x", "answer_type": "y", "answers": []}], {1: "a"}, "non-empty list"),
    ([{"question_id": 1, "answers": [{"answer": "a"}]}], {1: "a"}, "no 'question_type'"),
])
def test_score_vqa_rejects_bad_input(anns: list, preds: dict, message: str) -> None:
    with pytest.raises(EvalkitError, match=message) as info:
        score_vqa(anns, preds)
    assert "\n" not in str(info.value)


def test_question_accuracy_rejects_bad_input() -> None:
    with pytest.raises(EvalkitError):
        question_accuracy("a", [])
    with pytest.raises(EvalkitError):
        question_accuracy(None, ["a"] * 10)  # type: ignore[arg-type]
