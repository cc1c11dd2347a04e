"""LAVIS's text processors, restated: the question and caption cleaning its BLIP-2 evaluations apply.

Hand-written because LAVIS is not a dependency (it pins old transformers and pulls dozens of packages);
tests check these functions against outputs of LAVIS's own processors (tests/fixtures/lavis_parity/).
"""

from __future__ import annotations

import re

_LAVIS_PUNCTUATION = re.compile(r"([.!\"()*#:;~])")


def blip_question(question: str, max_words: int = 50) -> str:
    """LAVIS ``BlipQuestionProcessor`` (lavis/processors/blip_processors.py, "blip_question"): lower-case,
    delete ``. ! " ( ) * # : ; ~``, strip trailing spaces, keep the first ``max_words`` space-separated words."""
    question = _LAVIS_PUNCTUATION.sub("", question.lower()).rstrip(" ")
    words = question.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else question


def blip_caption(caption: str, max_words: int = 50) -> str:
    """LAVIS ``BlipCaptionProcessor.pre_caption`` ("blip_caption", the retrieval eval configs' text processor):
    lower-case, turn ``. ! " ( ) * # : ; ~`` into spaces, squeeze runs of white space, strip, keep the first
    ``max_words`` words."""
    caption = _LAVIS_PUNCTUATION.sub(" ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else caption


QUESTION_PREPROCESSORS = {"": lambda question: question, "lavis-blip-question": blip_question}


def preprocess_question(question: str, how: str) -> str:
    """The question as the protocol's ``question_preprocess`` says ("" leaves it as it is)."""
    return QUESTION_PREPROCESSORS[how](question)
