"""What the Python API and the caption / ask / chat commands return: one plain, frozen record per answer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class _Record:
    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able dict (one ``--jsonl`` line)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Caption(_Record):
    """A caption of one image. ``caption`` continues ``prompt`` (the prompt is not repeated in it)."""

    image: str
    prompt: str
    caption: str
    model: str
    protocol_fingerprint: str
    status: str = "ok"  # "ok" | "failed" (a bad image, with --skip-bad-images)
    error: str = ""


@dataclass(frozen=True)
class Answer(_Record):
    """The answer to one question about one image; ``prompt`` is exactly what the model was given."""

    image: str
    question: str
    prompt: str
    answer: str
    model: str
    protocol_fingerprint: str
    status: str = "ok"
    error: str = ""


@dataclass(frozen=True)
class ChatTurn(_Record):
    """One turn of a conversation about one image.

    ``kept_turns`` earlier turns are in ``prompt``; ``dropped_turns`` is how many of the oldest ones
    were left out so that the prompt fits the language model's context.
    """

    image: str
    turn: int
    question: str
    prompt: str
    answer: str
    kept_turns: int
    dropped_turns: int
    model: str
    protocol_fingerprint: str
