"""What a run produces besides its predictions: scores and statistics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScoreResult:
    """Corpus metrics (0-100), per-sample scores, and anything else worth recording."""

    metrics: dict[str, float]
    per_sample: dict[str, dict[str, float]]
    headline: str
    details: dict[str, Any] = field(default_factory=dict)
    scale: str = "0-100"
    # metric -> {"std_error", "std_error_method"} a kind computed while scoring (e.g. corpus BLEU by bootstrap);
    # the other metrics get TaskKind.standard_errors
    std_errors: dict[str, dict] = field(default_factory=dict)


@dataclass
class RunStats:
    """What happened while producing predictions (this invocation only)."""

    generated: int = 0
    failed: int = 0
    generation_seconds: float = 0.0
    images_encoded: int = 0
    batch_size: int = 0
    oom_retries: int = 0
    decode_workers: int = 0  # threads decoding and preprocessing images ahead of the model
    failures: list[str] = field(default_factory=list)
