"""Protocols: every knob that moves a number, one record per way of asking a model, and its fingerprint.

A generation task (captioning, VQA) records a :class:`GenerationProtocol`; a retrieval task a
:class:`RetrievalProtocol`. Neither carries the other's settings, so a retrieval default never
re-fingerprints a caption run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from evalkit.core.errors import EvalkitError


QUESTION_PREPROCESSING = ("", "lavis-blip-question")  # see evalkit/data/lavis_text.py


class _ProtocolFields:
    """What both protocol records do: JSON form, fingerprint, validated overrides."""

    def to_dict(self) -> dict[str, Any]:
        """The protocol as plain JSON-able data."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the protocol (sorted keys, no whitespace)."""
        return sha256_of(self.to_dict())

    def with_overrides(self, overrides: Mapping[str, Any]):
        """A copy with the given fields replaced; a field this kind of protocol lacks is an error."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = [key for key in overrides if key not in known]
        if unknown:
            raise EvalkitError(f"unknown {self.label} protocol setting {unknown[0]!r}; "
                               f"known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class GenerationProtocol(_ProtocolFields):
    """How a generation task asks a model for an answer (prompt, decoding, image size, precision).

    ``prompt`` is a template: ``{question}`` is replaced by the sample's question, an empty
    prompt means unprompted generation (from BOS). ``image_size`` None means the checkpoint's
    processor decides; ``dtype`` None means the model family's default.
    """

    label = "generation"

    name: str = "default"  # the task's named protocol this one is (e.g. "paper", "lavis")
    prompt: str = ""
    question_preprocess: str = ""  # "lavis-blip-question": LAVIS's blip_question before the prompt is filled
    max_prompt_tokens: int = 0  # cut the tokenised prompt to this many tokens (LAVIS OPT VQA: 32); 0 = never
    num_beams: int = 1
    max_new_tokens: int = 30
    min_new_tokens: int = 0
    # LAVIS's min_length: the shortest decoder sequence, counted as transformers 4.26 did. Decoder-only: BOS +
    # prompt + answer tokens; encoder-decoder: the decoder start token + answer tokens. 0 = no such bound.
    min_length: int = 0
    length_penalty: float = 1.0
    repetition_penalty: float = 1.0
    image_size: int | None = None
    dtype: str | None = None
    stop_at_newline: bool = False
    prompt_variant: str = "default"
    # chat-style multi-turn prompting (VQA): earlier turns are kept, oldest dropped first
    chat: bool = False
    chat_turn: str = "Question: {question} Answer: {answer}."
    max_context_tokens: int = 512

    def __post_init__(self) -> None:
        # checked here, not only in the CLI: the Python API and task files build protocols too (num_beams=-3 would
        # otherwise reach transformers' beam search as a negative tensor size)
        for name, least in (("num_beams", 1), ("max_new_tokens", 1), ("min_new_tokens", 0), ("min_length", 0),
                            ("max_prompt_tokens", 0), ("max_context_tokens", 1)):
            _check_whole(name, getattr(self, name), least)
        if self.image_size is not None:
            _check_whole("image_size", self.image_size, 1)
        if self.min_new_tokens > self.max_new_tokens:
            raise EvalkitError(f"min_new_tokens {self.min_new_tokens} is more than max_new_tokens {self.max_new_tokens}")
        if self.question_preprocess not in QUESTION_PREPROCESSING:
            raise EvalkitError(f"unknown question_preprocess {self.question_preprocess!r} "
                               f"(known: {', '.join(repr(q) for q in QUESTION_PREPROCESSING)})")


@dataclass(frozen=True)
class RetrievalProtocol(_ProtocolFields):
    """How a retrieval task ranks: ITC shortlist size, ITM re-rank, text length and cleaning, image size."""

    label = "retrieval"

    name: str = "default"
    image_size: int | None = None
    dtype: str | None = None
    rerank_k: int = 128
    rerank: bool = True
    max_text_tokens: int = 35
    text_preprocess: str = ""  # "lavis-blip-caption": LAVIS's caption cleaning before tokenising


def _check_whole(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise EvalkitError(f"{name} must be a whole number of at least {least} (got {value!r})")


def sha256_of(data: Any) -> str:
    """sha256 hex digest of the canonical JSON form of ``data``."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def overrides_text(overrides: dict) -> str:
    """``{"prompt_variant": "answer", "num_beams": 3}`` -> ``num_beams=3, prompt_variant=answer``."""
    parts = []
    for key in sorted(overrides):
        if key == "prompt" and "prompt_variant" in overrides and overrides["prompt_variant"] != "custom":
            continue  # the named variant says it
        value = overrides[key]
        text = json.dumps(value) if not isinstance(value, str) else repr(value) if key == "prompt" else value
        parts.append(f"{key}={text}")
    return ", ".join(parts)
