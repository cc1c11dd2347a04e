"""Decode and preprocess the next batches' images in a thread pool while the model works on this one.

PIL's JPEG decoder and resize, and torch's element-wise ops, release the GIL, so threads scale with
cores without pickling images between processes. Each image is decoded and turned into pixel values on
its own, in a worker; a batch's pixel values are the per-image tensors stacked, which are the same bits
as preprocessing the batch at once (``lavis_pixel_values`` treats every image on its own).

Bad images keep ``load_images``'s semantics: a batch's keys are checked in order and the first bad one
raises the same one-line error when that batch is reached (``skip_bad=False``), or is reported as bad.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from PIL import Image

from evalkit.core.errors import EvalkitError
from evalkit.data.images import BadImageError, ImageSource
from evalkit.inference.cpu_threads import current_budget, gpu_workers

Preprocess = Callable[[Image.Image], torch.Tensor]  # one image -> pixel values [3, size, size]


def default_workers(device: torch.device | str | None = None) -> int:
    """Decode workers: on CPU, their share of the budget with torch's threads (``cpu_threads``); beside a GPU,
    ``EVALKIT_DECODE_WORKERS`` when set, else the cores this process may use (at most 8)."""
    if device is not None and torch.device(device).type == "cpu":
        return current_budget().decode_workers
    return gpu_workers()


@dataclass
class StageTimes:
    """Seconds spent per stage of a generation run (wall time in the main thread, except ``decode_preprocess``,
    which adds up the workers' own time and so can exceed the wall time with several workers)."""

    decode_preprocess: float = 0.0
    host_wait: float = 0.0  # main thread blocked waiting for decoded images
    vision: float = 0.0
    generation: float = 0.0
    images: int = 0

    def to_json(self) -> dict:
        return {"decode_preprocess_s": round(self.decode_preprocess, 4), "host_wait_s": round(self.host_wait, 4),
                "vision_s": round(self.vision, 4), "generation_s": round(self.generation, 4), "images": self.images}


class _Loaded:
    """One image's outcome: its pixel values (or decoded image, without a preprocess) or why it is bad."""

    __slots__ = ("value", "bad", "seconds")

    def __init__(self, value, bad: BadImageError | None, seconds: float):
        self.value, self.bad, self.seconds = value, bad, seconds


def _load_one(images: ImageSource, key: str, preprocess: Preprocess | None) -> _Loaded:
    started = time.perf_counter()
    try:
        image = images.open(key)
    except BadImageError as err:
        return _Loaded(None, err, time.perf_counter() - started)
    value = preprocess(image) if preprocess is not None else image
    return _Loaded(value, None, time.perf_counter() - started)


class ImagePrefetcher:
    """Loads the images of a fixed list of batches ahead of use with ``workers`` threads.

    ``batch_keys[i]`` are the keys batch ``i`` needs loaded (each key once, in order). ``take(i)`` returns
    (key -> pixel values, key -> reason for the bad ones) and keeps at least the next batch, and at least
    ``4 x workers`` images, in flight.
    """

    def __init__(self, images: ImageSource, batch_keys: Sequence[Sequence[str]], preprocess: Preprocess | None,
                 workers: int, skip_bad: bool, times: StageTimes | None = None):
        self.images = images
        self.batch_keys = [list(keys) for keys in batch_keys]
        self.preprocess = preprocess
        self.workers = max(1, int(workers))
        self.skip_bad = skip_bad
        self.times = times if times is not None else StageTimes()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="evalkit-decode")
        self._futures: dict[int, list[Future]] = {}
        self._submitted = 0  # batches submitted so far

    def __enter__(self) -> "ImagePrefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop: queued images are dropped, running ones finish."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _fill(self, after: int) -> None:
        """Submit batches after ``after`` until the next batch and >= 4 x workers images are in flight."""
        want = 4 * self.workers
        while self._submitted < len(self.batch_keys):
            in_flight = sum(len(self.batch_keys[i]) for i in self._futures if i > after)
            if self._submitted > after + 1 and in_flight >= want:
                break
            index = self._submitted
            self._futures[index] = [self._pool.submit(_load_one, self.images, key, self.preprocess)
                                    for key in self.batch_keys[index]]
            self._submitted += 1

    def take(self, index: int) -> tuple[dict, dict[str, str]]:
        """Batch ``index``'s loaded images and bad ones; raises at its first bad image unless skipping them."""
        self._fill(index - 1)
        futures = self._futures.pop(index)
        self._fill(index)  # queue what comes next before blocking on this batch
        started = time.perf_counter()
        outcomes = [future.result() for future in futures]
        self.times.host_wait += time.perf_counter() - started
        loaded, bad = {}, {}
        for key, outcome in zip(self.batch_keys[index], outcomes):
            self.times.decode_preprocess += outcome.seconds
            if outcome.bad is not None:
                if not self.skip_bad:
                    raise EvalkitError(f"{outcome.bad} (use --skip-bad-images to record it as failed and go on)")
                bad[key] = outcome.bad.reason
            else:
                loaded[key] = outcome.value
                self.times.images += 1
        return loaded, bad
