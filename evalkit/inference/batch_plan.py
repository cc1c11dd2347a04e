"""Which samples share a generation batch: windows of whole images, batches cut from each window.

The runner takes the samples a window at a time (whole images, in first-appearance order, at least
``window_batches`` batches' worth). The window's images are encoded once before its batches run, and its
answers are journaled together in image order, so ``predictions.jsonl`` is the same file whatever the batch
size. Inside a window the batches can be cut after sorting the prompts by token length (stable, so ties keep
image order): a batch pads every prompt to its longest one, so VQA batches of mixed question lengths hold pad
tokens. Batching never changes an answer (tests/test_batched_generation.py), so the order only moves time.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Callable, Sequence

from evalkit.core.samples import Sample, order_by_image

WINDOW_BATCHES = 4  # batches' worth of samples per window: sorting room vs work lost to a crash


@dataclass(frozen=True)
class Window:
    """A run of whole images: their samples in image order (the journal order) and the batches to run."""

    samples: list[Sample]
    batches: list[list[Sample]]

    @property
    def image_keys(self) -> list[str]:
        """The window's images, each once, in first-appearance order."""
        return list(dict.fromkeys(s.image for s in self.samples))


def plan_windows(samples: Sequence[Sample], batch_size: int, prompt_length: Callable[[Sample], int],
                 window_batches: int = WINDOW_BATCHES) -> list[Window]:
    """The run's windows: whole images until ``window_batches * batch_size`` samples; batches cut after sorting
    by ``prompt_length`` (a constant keeps image order)."""
    windows, current = [], []
    for _, group in groupby(order_by_image(samples), key=lambda s: s.image):
        current.extend(group)
        if len(current) >= window_batches * batch_size:
            windows.append(_window(current, batch_size, prompt_length))
            current = []
    if current:
        windows.append(_window(current, batch_size, prompt_length))
    return windows


def _window(samples: list[Sample], batch_size: int, prompt_length: Callable[[Sample], int]) -> Window:
    by_length = sorted(samples, key=prompt_length)
    return Window(list(samples), [by_length[i:i + batch_size] for i in range(0, len(by_length), batch_size)])


def padding_tokens(batches: Sequence[Sequence[Sample]], prompt_length: Callable[[Sample], int]) -> tuple[int, int]:
    """(pad tokens, prompt tokens) the batches hold: what length sorting saves, measured without a model."""
    pads = tokens = 0
    for batch in batches:
        lengths = [prompt_length(s) for s in batch]
        tokens += sum(lengths)
        pads += max(lengths) * len(lengths) - sum(lengths)
    return pads, tokens
