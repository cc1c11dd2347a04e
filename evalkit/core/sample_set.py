"""A loaded evaluation set: the samples, where their images come from, and its identity."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.core.samples import Sample


@dataclass
class SampleSet:
    """Samples in a fixed order plus what scoring needs (e.g. official VQA annotations)."""

    samples: list[Sample]
    images: Any  # where the image keys resolve (evalkit.data.images.ImageSource)
    identity: dict[str, Any]  # format, source, split, file hashes, n_total
    annotations: Any = None  # task-specific ground truth for the scorer

    def limited(self, limit: int | None) -> SampleSet:
        """The first ``limit`` samples (by image for grouped sets), identity updated."""
        if not limit or limit >= len(self.samples):
            return self
        kept = self.samples[:limit]
        identity = dict(self.identity, limit=limit, n_samples=len(kept))
        return SampleSet(kept, self.images, identity, self.annotations)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (identifies the annotation file a number came from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()
