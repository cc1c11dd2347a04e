"""VQAv2 accuracy, reproducing the official GT-Vision-Lab evaluation bit for bit.

Formula (Antol et al. 2015; Goyal et al. 2017), for one question with human answers
h_1..h_n (n = 10 in VQAv2) and prediction p, after answer normalisation::

    acc(p) = 1/n * sum_i min(1, #{j != i : h_j == p} / 3)

and every reported number is ``round(100 * mean(acc), 2)`` over all questions, over
the questions of one ``question_type`` or over those of one ``answer_type``.

Source: GT-Vision-Lab/VQA, ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` (commit
a013f00, "Fixed processing answers bug", 2021), a Python 2 script. ``variant="official"``
reproduces what that script prints under the Python 2.7 interpreter it was written
for, quirks included:

* ``\\n`` and ``\\t`` become spaces and the ends are stripped, in the prediction and
  in every human answer.
* Normalisation (punctuation, then digits/articles/contractions) is applied to the
  human answers *and* the prediction only when the stripped human answers are not all
  identical. So ``"Yes"`` against ten ``"yes"`` scores 0, ``"yes"`` scores 1.
* Punctuation: each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is deleted when
  the *original* text contains ``"p "`` or ``" p"`` or a digit-comma-digit anywhere,
  otherwise replaced by a space. Then periods not followed by a digit are deleted, but
  at most 32 of them: the script passes ``re.UNICODE`` (== 32) as ``re.sub``'s *count*.
  Its look-behind ``(?!<=\\d)`` is malformed (a look-ahead for the text "<=digit"),
  so it never blocks a deletion: "1.5" keeps its period only because a digit follows.
  ``'``, ``:``, ``*``, ``#``, ``$``, ``%``, ``&``, ``^``, ``|``, ``~`` are kept.
* Digits/articles: lowercase, split on whitespace, none/zero..ten -> 0..10, drop
  a/an/the, expand contractions from the script's table (its quirks kept: the
  capitalised keys never match after lowercasing, and "somebody'd" becomes
  "somebodyd"), join with single spaces.
* Leave-one-out: the script removes "the other" answers by *dict* equality. With
  distinct ``answer_id`` values (all official files) this removes exactly one entry by
  position; when answer dicts are identical (no or repeated ``answer_id``) all copies
  are removed together, and :func:`score_vqa` reproduces that too.
* Python 2 semantics: ``round`` rounds halves away from zero (``round(0.625, 2)`` is
  0.63; Python 3 gives 0.62), ``sum`` adds left to right (Python >= 3.12's ``sum``
  compensates), ``\\d`` matches only ASCII digits, ``lower()`` uses Python 2.7's
  Unicode 5.2 simple case mapping ("İ" -> "i", final sigma not special) and U+180E
  counts as whitespace. (The case table was measured against Python 3.10-3.13; a later
  Unicode version that adds new case pairs would need the table extended.)

``variant="lavis"`` is salesforce/LAVIS ``lavis/common/vqa_tools/vqa_eval.py`` (the
pre-2021 official script, run under Python 3): the prediction is always stripped and
fully normalised; the human answers are not whitespace-cleaned and, when not all
identical, only get the punctuation step (no lowercasing, no number words, no
articles, and no re-joining, so "red?" becomes "red " and never matches). Python 3
``round`` and ``re``, and the running interpreter's ``sum``. (LAVIS's optional spaCy
lemmatiser is a model-side option, off in its BLIP-2 VQAv2 configs; not part of this.)

``variant="lmms"`` is EvolvingLMMs-Lab/lmms-eval ``tasks/vqav2/utils.py`` since commit
28ea9a11 (Aug 2025): both sides are always cleaned and fully normalised, with a
comma pattern ``(?<=\\d)(\\,)+(?=\\d)`` (also matches "1,,2"), a per-question
``statistics.mean`` and a plain ``sum/len`` over questions. lmms-eval reports that
mean unrounded on a 0-1 scale; here it is reported as ``round(100 * mean, 2)`` like the
other variants, with per-type breakdowns lmms-eval does not have.

Example::

    >>> question_accuracy("Two", ["2"] * 3 + ["two"] * 2 + ["3"] * 5)
    1.0
    >>> question_accuracy("Yes", ["yes"] * 10)
    0.0
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from evalkit.core.errors import EvalkitError
from evalkit.metrics.id_preview import preview_ids

VQA_METRIC_VARIANTS = ("official", "lavis", "lmms")

_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
                ">", "<", "@", "`", ",", "?", "!")
_PUNCTUATION_OR_PERIOD = frozenset(_PUNCTUATION) | {"."}
_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
                 "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset({"a", "an", "the"})

# The official script's contraction table, as "key>value" pairs (sorted; quirks kept).
_CONTRACTION_PAIRS = """
'ow'sat>'ow's'at 'ows'at>'ow's'at I'dve>I'd've Id've>I'd've Im>I'm Ive>I've
aint>ain't arent>aren't cant>can't couldn'tve>couldn't've couldnt>couldn't
couldnt've>couldn't've couldve>could've didnt>didn't doesnt>doesn't dont>don't
hadn'tve>hadn't've hadnt>hadn't hadnt've>hadn't've hasnt>hasn't havent>haven't
he'dve>he'd've hed>he'd hed've>he'd've hes>he's howd>how'd howll>how'll
hows>how's isnt>isn't it'dve>it'd've itd>it'd itd've>it'd've itll>it'll
let's>let's maam>ma'am mightn'tve>mightn't've mightnt>mightn't mightnt've>mightn't've
mightve>might've mustnt>mustn't mustve>must've neednt>needn't notve>not've
oclock>o'clock oughtnt>oughtn't ow's'at>'ow's'at shant>shan't she'dve>she'd've
she's>she's shed've>she'd've shouldn'tve>shouldn't've shouldnt>shouldn't
shouldnt've>shouldn't've shouldve>should've somebody'd>somebodyd somebody'dve>somebody'd've
somebodyd've>somebody'd've somebodyll>somebody'll somebodys>somebody's someone'dve>someone'd've
someoned>someone'd someoned've>someone'd've someonell>someone'll someones>someone's
something'dve>something'd've somethingd>something'd somethingd've>something'd've
somethingll>something'll thats>that's there'dve>there'd've thered>there'd
thered've>there'd've therere>there're theres>there's they'dve>they'd've
theyd>they'd theyd've>they'd've theyll>they'll theyre>they're theyve>they've
twas>'twas wasnt>wasn't we'dve>we'd've wed've>we'd've werent>weren't weve>we've
whatll>what'll whatre>what're whats>what's whatve>what've whens>when's whered>where'd
wheres>where's whereve>where've who'dve>who'd've whod>who'd whod've>who'd've
wholl>who'll whos>who's whove>who've whyll>why'll whyre>why're whys>why's
wont>won't wouldn'tve>wouldn't've wouldnt>wouldn't wouldnt've>wouldn't've
wouldve>would've y'all'dve>y'all'd've y'alld've>y'all'd've y'allll>y'all'll
yall>y'all yall'd've>y'all'd've yall'll>y'all'll you'dve>you'd've youd>you'd
youd've>you'd've youll>you'll youre>you're youve>you've
"""
_CONTRACTIONS = dict(pair.split(">", 1) for pair in _CONTRACTION_PAIRS.split())

# ---------------------------------------------------------------- Python 2 text semantics
# Python 3's str.isspace() set, plus U+180E which Python 2.7 (Unicode 5.2) also treats
# as whitespace in strip() and split().
_PY3_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003"
                   "\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_PY2_WHITESPACE = _PY3_WHITESPACE + "\u180e"

# Code points that Python 3.10-3.13 lowercase but Python 2.7 leaves unchanged (letters
# that were uncased or unassigned in Unicode 5.2), measured by running both
# interpreters over every code point. The only other difference is U+0130 ("İ"), which
# Python 2 maps to "i" and Python 3 to "i" + U+0307. Python 3's context-dependent final
# sigma is avoided by lowercasing one character at a time.
_PY2_UNCASED_RANGES = (
    "037f 0526 0528 052a 052c 052e 10c7 10cd 13a0-13f5 1c90-1cba 1cbd-1cbf 2c2f 2cf2 a660 "
    "a698 a69a a78d a790 a792 a796 a798 a79a a79c a79e a7a0 a7a2 a7a4 a7a6 a7a8 a7aa-a7ae "
    "a7b0-a7b4 a7b6 a7b8 a7ba a7bc a7be a7c0 a7c2 a7c4-a7c7 a7c9 a7d0 a7d6 a7d8 a7f5 "
    "104b0-104d3 10570-1057a 1057c-1058a 1058c-10592 10594-10595 10c80-10cb2 118a0-118bf "
    "16e40-16e5f 1e900-1e921"
)


def _code_point_set(ranges: str) -> frozenset[str]:
    chars: set[str] = set()
    for item in ranges.split():
        first, _, last = item.partition("-")
        chars.update(chr(c) for c in range(int(first, 16), int(last or first, 16) + 1))
    return frozenset(chars)


_PY2_LOWER_EXCEPTIONS = {ch: ch for ch in _code_point_set(_PY2_UNCASED_RANGES)}
_PY2_LOWER_EXCEPTIONS["\u0130"] = "i"


def _py2_lower(text: str) -> str:
    """``unicode.lower()`` as Python 2.7 computes it."""
    if text.isascii():
        return text.lower()
    return "".join(_PY2_LOWER_EXCEPTIONS.get(ch) or ch.lower() for ch in text)


def _py2_strip(text: str) -> str:
    """``unicode.strip()`` as Python 2.7 computes it."""
    return text.strip(_PY2_WHITESPACE) if "\u180e" in text else text.strip()


def _py2_split(text: str) -> list[str]:
    """``unicode.split()`` as Python 2.7 computes it."""
    return text.replace("\u180e", " ").split() if "\u180e" in text else text.split()


def _py2_round(value: float, ndigits: int = 2) -> float:
    """Python 2.7's ``round``: correctly rounded, exact halves away from zero."""
    step = Decimal(1).scaleb(-ndigits)
    return float(Decimal(value).quantize(step, rounding=ROUND_HALF_UP))


def _sequential_sum(values: Sequence[float]) -> float:
    """Python 2's ``sum`` of floats: plain left-to-right addition, no compensation."""
    total = 0.0
    for value in values:
        total += value
    return total


# ---------------------------------------------------------------- normalisation steps
def _clean_whitespace(text: str, strip: Callable[[str], str]) -> str:
    return strip(text.replace("\n", " ").replace("\t", " "))


def _process_punctuation(text: str, comma_digit: re.Pattern[str], period: re.Pattern[str]) -> str:
    """The official ``processPunctuation`` (see the module docstring)."""
    if not _PUNCTUATION_OR_PERIOD.intersection(text):
        return text
    delete_all = comma_digit.search(text) is not None
    out = text
    for p in _PUNCTUATION:
        if p in out:
            delete = delete_all or (p + " " in text) or (" " + p in text)
            out = out.replace(p, "" if delete else " ")
    return period.sub("", out, count=32)


def _process_digit_article(text: str, lower: Callable[[str], str],
                           split: Callable[[str], list[str]]) -> str:
    """The official ``processDigitArticle``: numbers, articles, contractions."""
    words = []
    for word in split(lower(text)):
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


@dataclass(frozen=True)
class _Rules:
    """How one harness turns raw answers into the strings it compares."""

    name: str
    strip: Callable[[str], str]
    lower: Callable[[str], str]
    split: Callable[[str], list[str]]
    comma_digit: re.Pattern[str]
    period: re.Pattern[str]

    def punctuation(self, text: str) -> str:
        return _process_punctuation(text, self.comma_digit, self.period)

    def full(self, text: str) -> str:
        return _process_digit_article(self.punctuation(text), self.lower, self.split)

    def clean(self, text: str) -> str:
        return _clean_whitespace(text, self.strip)


_RULES = {
    "official": _Rules("official", _py2_strip, _py2_lower, _py2_split,
                       re.compile(r"[0-9],[0-9]"), re.compile(r"\.(?![0-9])")),
    "lavis": _Rules("lavis", str.strip, str.lower, str.split,
                    re.compile(r"\d,\d"), re.compile(r"\.(?!\d)")),
    "lmms": _Rules("lmms", str.strip, str.lower, str.split,
                   re.compile(r"(?<=\d),+(?=\d)"), re.compile(r"\.(?!\d)")),
}


def check_vqa_variant(variant: str) -> str:
    """Return ``variant`` if it is one of :data:`VQA_METRIC_VARIANTS`, else raise EvalkitError."""
    if not isinstance(variant, str) or variant not in _RULES:
        raise EvalkitError(f"unknown VQA metric variant {variant!r}; "
                           f"valid variants: {', '.join(VQA_METRIC_VARIANTS)}")
    return variant


def normalise_answer(text: str, variant: str = "lavis") -> str:
    """An answer after a variant's whitespace cleaning, processPunctuation and processDigitArticle
    (e.g. LAVIS's GQA scoring normalises every prediction this way with the "lavis" rules)."""
    return _RULES[check_vqa_variant(variant)].full(text)


class _Normaliser:
    """Per-variant answer normalisation, cached per distinct string (answers repeat a lot)."""

    def __init__(self, rules: _Rules) -> None:
        self.rules = rules
        self.lavis = rules.name == "lavis"
        self.always = rules.name == "lmms"
        self._human: dict[str, tuple[str, str]] = {}
        self._prediction: dict[str, tuple[str, str]] = {}

    def _human_forms(self, text: str) -> tuple[str, str]:
        """(form compared when answers are all identical, form compared otherwise)."""
        rules = self.rules
        if self.lavis:
            forms = (text, rules.punctuation(text))
        else:
            clean = rules.clean(text)
            forms = (clean, rules.full(clean))
        self._human[text] = forms
        return forms

    def _prediction_forms(self, text: str) -> tuple[str, str]:
        rules = self.rules
        clean = rules.clean(text)
        full = rules.full(clean)
        forms = (full, full) if self.lavis else (clean, full)
        self._prediction[text] = forms
        return forms

    def compared(self, prediction: str, answers: Sequence[str]) -> tuple[str, list[str]]:
        """The prediction and human answers exactly as the harness compares them."""
        get = self._human.get
        forms = [get(a) or self._human_forms(a) for a in answers]
        pred_forms = self._prediction.get(prediction) or self._prediction_forms(prediction)
        plain = [f[0] for f in forms]
        if self.always or len(set(plain)) > 1:
            return pred_forms[1], [f[1] for f in forms]
        return pred_forms[0], plain


def _answer_accuracies(matches: Sequence[int]) -> list[float]:
    """min(1, matches among the others / 3) for each human answer."""
    return [min(1.0, m / 3) for m in matches]


def _mean_of_answers(variant: str, accs: list[float]) -> float:
    if variant == "official":
        return _sequential_sum(accs) / len(accs)
    if variant == "lavis":
        return float(sum(accs)) / len(accs)
    return float(statistics.mean(accs))


class _QuestionScorer:
    def __init__(self, variant: str) -> None:
        self.variant = variant
        self.normaliser = _Normaliser(_RULES[check_vqa_variant(variant)])
        self._by_mask: dict[tuple[bool, ...], float] = {}

    def positional(self, prediction: str, answers: Sequence[str]) -> float:
        """Accuracy when "the others" means every other position."""
        pred, gts = self.normaliser.compared(prediction, answers)
        mask = tuple(map(pred.__eq__, gts))
        acc = self._by_mask.get(mask)
        if acc is None:
            hits = sum(mask)
            acc = _mean_of_answers(self.variant, _answer_accuracies([hits - m for m in mask]))
            self._by_mask[mask] = acc
        return acc

    def by_dict_equality(self, prediction: str, answer_dicts: Sequence[Mapping[str, Any]]) -> float:
        """Accuracy when "the others" means answer dicts unequal to this one, as in the scripts."""
        pred, gts = self.normaliser.compared(prediction, [d["answer"] for d in answer_dicts])
        compared = [{**d, "answer": g} for d, g in zip(answer_dicts, gts)]
        matches = [sum(1 for other in compared if other != this and other["answer"] == pred)
                   for this in compared]
        return _mean_of_answers(self.variant, _answer_accuracies(matches))


def question_accuracy(prediction: str, human_answers: list[str], variant: str = "official") -> float:
    """VQA accuracy of one prediction, 0..1, unrounded.

    ``1/n * sum_i min(1, #{j != i: h_j == p} / 3)`` after the variant's normalisation;
    "j != i" is by position (what the official script does for distinct answer ids).
    Source: official ``vqaEval.py`` ``evaluate`` (see the module docstring for variants).

    >>> question_accuracy("2", ["two"] * 2 + ["2"] * 8)      # 2 x 1 + 8 x 1
    1.0
    >>> round(question_accuracy("red", ["red", "blue"] + ["green"] * 8), 4)  # 9 x 1/3 / 10
    0.3
    """
    scorer = _QuestionScorer(variant)
    if not isinstance(prediction, str):
        raise EvalkitError(f"VQA prediction must be a string, got {type(prediction).__name__}")
    if not human_answers or not all(isinstance(a, str) for a in human_answers):
        raise EvalkitError("VQA human answers must be a non-empty list of strings")
    return scorer.positional(prediction, human_answers)


@dataclass(frozen=True)
class VQAScores:
    """VQAv2 accuracies on the official 0-100 scale.

    ``overall``, ``per_answer_type`` and ``per_question_type`` are rounded to 2 decimals as
    the chosen variant rounds them; ``per_question`` maps question id to 100 x accuracy,
    unrounded (the official ``evalQA`` rounds these to 2 decimals).
    """

    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[int, float]
    n: int
    variant: str

    def to_json(self) -> dict[str, Any]:
        """The official script's ``accuracy`` dict: overall, perAnswerType, perQuestionType."""
        return {"overall": self.overall,
                "perAnswerType": dict(self.per_answer_type),
                "perQuestionType": dict(self.per_question_type)}


def _aggregate(variant: str, accs: list[float]) -> float:
    """round(100 * mean, 2) with the variant's own summation and rounding."""
    if variant == "official":
        return _py2_round(100 * _sequential_sum(accs) / len(accs), 2)
    if variant == "lavis":
        return round(100 * float(sum(accs)) / len(accs), 2)
    return round(100 * (sum(accs) / len(accs)), 2)


def _has_distinct_answer_ids(answer_dicts: Sequence[Mapping[str, Any]]) -> bool:
    """True when no two answer dicts can be equal, so leave-one-out is by position."""
    ids = [d.get("answer_id") for d in answer_dicts]
    try:
        return len(set(ids)) == len(ids)
    except TypeError:  # unhashable ids: compare the dicts themselves
        return False


def _answer_texts(ann: Any, index: int) -> list[str]:
    """The annotation's answer strings, after checking its shape."""
    if type(ann) is not dict and not isinstance(ann, Mapping):
        raise EvalkitError(f"VQA annotation {index} is not an object")
    for key in ("question_id", "question_type", "answer_type", "answers"):
        if key not in ann:
            raise EvalkitError(f"VQA annotation {index} has no {key!r}")
    answers = ann["answers"]
    try:
        texts = [d["answer"] for d in answers]
    except (TypeError, KeyError, IndexError):
        texts = []
    if not texts or not all(type(t) is str for t in texts):
        raise EvalkitError(f"VQA annotation for question {ann['question_id']}: 'answers' must be "
                           "a non-empty list of objects with a string 'answer'")
    return texts


def _check_one_prediction_each(missing: list[Any], n_questions: int, extra: list[Any]) -> None:
    """Raise unless every annotated question has a prediction and every prediction a question."""
    if missing:
        raise EvalkitError(f"no VQA prediction for {len(missing)} of {n_questions} questions "
                           f"(question ids {preview_ids(missing)})")
    if extra:
        raise EvalkitError(f"{len(extra)} VQA predictions have question ids not in the annotations "
                           f"({preview_ids(extra)})")


def score_vqa(annotations: list[dict], predictions: dict[int, str], variant: str = "official") -> VQAScores:
    """Score predictions against official VQAv2 annotation entries; inputs are not modified.

    ``annotations``: entries of ``v2_mscoco_*_annotations.json`` (``question_id``,
    ``question_type``, ``answer_type``, ``answers`` = list of ``{"answer": ...}`` dicts,
    10 in VQAv2). ``predictions``: question id -> answer, exactly one per annotation
    (missing or extra ids are an error, as the official ``loadRes`` asserts).
    Questions are accumulated in annotation order, as the official script does.

    Overall / per type = ``round(100 * mean(question accuracy), 2)``.

    >>> ann = {"question_id": 1, "question_type": "what", "answer_type": "other",
    ...        "answers": [{"answer": "cat", "answer_id": i} for i in range(1, 11)]}
    >>> score_vqa([ann], {1: "cat"}).overall
    100.0
    """
    scorer = _QuestionScorer(variant)
    if not annotations:
        raise EvalkitError("no VQA annotations to score")
    seen: set[Any] = set()
    per_question: dict[int, float] = {}
    accs: list[float] = []
    by_answer_type: dict[str, list[float]] = {}
    by_question_type: dict[str, list[float]] = {}
    missing: list[Any] = []
    for index, ann in enumerate(annotations):
        texts = _answer_texts(ann, index)
        qid = ann["question_id"]
        if qid in seen:
            raise EvalkitError(f"VQA question id {qid} appears twice in the annotations")
        seen.add(qid)
        prediction = predictions.get(qid)
        if prediction is None:
            missing.append(qid)
            continue
        if not isinstance(prediction, str):
            raise EvalkitError(f"VQA prediction for question {qid} is not a string")
        answer_dicts = ann["answers"]
        if _has_distinct_answer_ids(answer_dicts):
            acc = scorer.positional(prediction, texts)
        else:
            acc = scorer.by_dict_equality(prediction, answer_dicts)
        accs.append(acc)
        per_question[qid] = 100 * acc
        by_question_type.setdefault(ann["question_type"], []).append(acc)
        by_answer_type.setdefault(ann["answer_type"], []).append(acc)
    _check_one_prediction_each(missing, len(annotations), [qid for qid in predictions if qid not in seen])
    return VQAScores(
        overall=_aggregate(variant, accs),
        per_answer_type={t: _aggregate(variant, v) for t, v in by_answer_type.items()},
        per_question_type={t: _aggregate(variant, v) for t, v in by_question_type.items()},
        per_question=per_question,
        n=len(accs),
        variant=variant,
    )
