"""Typed records at the stage boundaries: Sample -> Prediction (-> scores, run record)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class Sample:
    """One thing to evaluate: an image, an optional question, and what counts as right.

    ``image`` is a key the dataset's image source resolves (a file path, or a row reference
    for Hugging Face datasets). ``group`` ties samples that share an image (VQA questions).
    """

    id: str
    image: str
    question: str = ""
    references: tuple[str, ...] = ()
    meta: tuple[tuple[str, Any], ...] = ()

    def meta_dict(self) -> dict[str, Any]:
        """The metadata as a dict (question_type, answer_type, ...)."""
        return dict(self.meta)


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one sample, as written to predictions.jsonl."""

    id: str
    prompt: str
    prediction: str
    references: tuple[str, ...] = ()
    status: str = "ok"  # "ok" | "failed"
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    image: str = ""

    def to_json(self) -> dict[str, Any]:
        """The journal line for this prediction."""
        line = {
            "id": self.id,
            "prompt": self.prompt,
            "prediction": self.prediction,
            "references": list(self.references),
            "status": self.status,
        }
        if self.image:
            line["image"] = self.image
        if self.error:
            line["error"] = self.error
        if self.extra:
            line["extra"] = self.extra
        return line

    @classmethod
    def from_json(cls, line: dict[str, Any]) -> Prediction:
        """Read a journal line back."""
        return cls(
            id=str(line["id"]),
            prompt=line.get("prompt", ""),
            prediction=line.get("prediction", ""),
            references=tuple(line.get("references", ())),
            status=line.get("status", "ok"),
            error=line.get("error", ""),
            extra=line.get("extra", {}) or {},
            image=line.get("image", ""),
        )


def order_by_image(samples: Sequence[Any]) -> list[Any]:
    """Samples grouped by image in first-appearance order (stable: an image's questions keep their order); the
    order a run encodes, batches and journals them in."""
    first_seen: dict[str, int] = {}
    for sample in samples:
        first_seen.setdefault(sample.image, len(first_seen))
    return sorted(samples, key=lambda s: first_seen[s.image])
