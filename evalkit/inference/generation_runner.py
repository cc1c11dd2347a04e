"""The runner owns batching: it groups samples by image, encodes each image once, generates in
batches, halves the batch on GPU out-of-memory, and journals every finished batch."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Sequence

import torch

from evalkit.data.images import BadImageError, ImageSource
from evalkit.data.lavis_text import preprocess_question
from evalkit.core.errors import EvalkitError
from evalkit.models.blip2_generation import Blip2Generator
from evalkit.core.protocol import GenerationProtocol
from evalkit.core.samples import Prediction, Sample
from evalkit.core.scores import RunStats
from evalkit.inference.image_prefetch import ImagePrefetcher, StageTimes, default_workers

Progress = Callable[[int], None]  # called with the number of samples just finished
Append = Callable[[list[Prediction]], None]  # journals a finished batch durably


def render_prompt(protocol: GenerationProtocol, question: str) -> str:
    """The protocol's prompt with ``{question}`` filled by the question, preprocessed as the protocol says;
    a plain replace, so braces inside a question are kept as they are."""
    return protocol.prompt.replace("{question}", preprocess_question(question, protocol.question_preprocess))


def order_by_image(samples: Sequence[Sample]) -> list[Sample]:
    """Samples grouped by image (first-appearance order) so an image's questions share a batch."""
    first_seen: dict[str, int] = {}
    for sample in samples:
        first_seen.setdefault(sample.image, len(first_seen))
    return sorted(samples, key=lambda s: first_seen[s.image])  # stable: keeps question order in an image


class _ImageCache:
    """Query embeddings of recently encoded images (an image's questions may straddle two batches)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.items: OrderedDict[str, torch.Tensor] = OrderedDict()

    def get(self, key: str) -> torch.Tensor | None:
        return self.items.get(key)

    def put(self, key: str, value: torch.Tensor) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.capacity:
            self.items.popitem(last=False)


def load_images(images: ImageSource, keys: list[str], skip_bad: bool) -> tuple[dict, dict[str, str]]:
    """Open each key once: (key -> image, key -> reason for the bad ones, when skipping them)."""
    loaded, bad = {}, {}
    for key in keys:
        try:
            loaded[key] = images.open(key)
        except BadImageError as err:
            if not skip_bad:
                raise EvalkitError(f"{err} (use --skip-bad-images to record it as failed and go on)") from None
            bad[key] = err.reason
    return loaded, bad


def run_single_turn(generator: Blip2Generator, samples: Sequence[Sample], images: ImageSource, protocol: GenerationProtocol,
                    append: Append, batch_size: int, skip_bad_images: bool = False,
                    progress: Progress | None = None, decode_workers: int | None = None,
                    times: StageTimes | None = None) -> RunStats:
    """Generate one answer per sample, journaling each finished batch; returns run statistics.

    The next batches' images are decoded and preprocessed by ``decode_workers`` threads (default: the
    cores, see ``default_workers``) while this batch runs; ``times`` collects the per-stage seconds.
    """
    stats = RunStats(batch_size=batch_size)
    times = times if times is not None else StageTimes()
    ordered = order_by_image(samples)
    cache = _ImageCache(capacity=max(4, batch_size))
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    known_bad: dict[str, str] = {}
    preprocess = _single_image_preprocess(generator)
    workers = stats.decode_workers = decode_workers or default_workers()
    with ImagePrefetcher(images, batch_image_keys(batches), preprocess, workers, skip_bad_images, times) as prefetch:
        for index, batch in enumerate(batches):
            loaded, bad = prefetch.take(index)
            known_bad.update(bad)
            started = time.perf_counter()
            predictions = _generate_batch(generator, batch, loaded, known_bad, cache, protocol, stats, times)
            finish_batch(predictions, started, stats, append, progress)
    return stats


def batch_image_keys(batches: Sequence[Sequence[Sample]]) -> list[list[str]]:
    """The images each batch must load: its images (once, in order) that the batch before did not hold.

    Batches come from ``order_by_image``, so an image's questions are contiguous: an image in batch i and an
    earlier batch is also in batch i - 1, and its embedding is taken from the cache.
    """
    keys, previous = [], set()
    for batch in batches:
        current = list(dict.fromkeys(s.image for s in batch))
        keys.append([key for key in current if key not in previous])
        previous = set(current)
    return keys


def _single_image_preprocess(generator: Blip2Generator) -> Callable:
    """One image -> its pixel values [3, s, s] with the generator's own pipeline (per-image, so the same bits)."""
    pixel_values = generator.pixel_values
    return lambda image: pixel_values([image])[0]


def finish_batch(predictions: list[Prediction], started: float, stats: RunStats, append: Append,
                 progress: Progress | None) -> None:
    """Count a finished batch's time and answers, journal it, then advance the progress bar."""
    stats.generation_seconds += time.perf_counter() - started
    append(predictions)
    stats.generated += len(predictions)
    if progress:
        progress(len(predictions))


def _generate_batch(generator: Blip2Generator, batch: Sequence[Sample], loaded: dict, bad: dict[str, str],
                    cache: _ImageCache, protocol: GenerationProtocol, stats: RunStats,
                    times: StageTimes | None = None) -> list[Prediction]:
    """``loaded`` maps the batch's newly loaded images to their pixel values [3, s, s]."""
    good = [s for s in batch if s.image not in bad]
    failed = [Prediction(s.id, render_prompt(protocol, s.question), "", s.references, "failed",
                         f"bad image: {bad[s.image]}", image=s.image) for s in batch if s.image in bad]
    stats.failed += len(failed)
    stats.failures += [p.error for p in failed]
    if not good:
        return failed
    to_encode = [key for key in dict.fromkeys(s.image for s in good) if cache.get(key) is None]
    if to_encode:
        started = time.perf_counter()
        embeds = _with_oom_retry(lambda part: generator.encode_images(torch.stack([loaded[k] for k in part])),
                                 to_encode, stats)
        _synchronize(generator)
        if times is not None:
            times.vision += time.perf_counter() - started
        for key, embed in zip(to_encode, embeds):
            cache.put(key, embed)
        stats.images_encoded += len(to_encode)
    prompts = [render_prompt(protocol, s.question) for s in good]
    queries = torch.stack([cache.get(s.image) for s in good])
    started = time.perf_counter()
    answers = _with_oom_retry(
        lambda part: generator.generate(queries[part[0]:part[-1] + 1], [prompts[i] for i in part], protocol),
        list(range(len(good))), stats)
    if times is not None:
        times.generation += time.perf_counter() - started
    done = [Prediction(s.id, p, a, s.references, image=s.image, extra=s.meta_dict())
            for s, p, a in zip(good, prompts, answers)]
    return done + failed


def _synchronize(generator: Blip2Generator) -> None:
    """Wait for queued GPU work so stage times are honest (a no-op on CPU)."""
    device = getattr(generator, "device", None)
    if getattr(device, "type", None) == "cuda":
        torch.cuda.synchronize(device)


def _with_oom_retry(work: Callable[[list], list], items: list, stats: RunStats) -> list:
    """Run ``work`` on all items; on CUDA out-of-memory split the items in halves and retry."""
    try:
        result = work(items)
        return list(result)
    except torch.cuda.OutOfMemoryError:
        if len(items) == 1:
            raise EvalkitError("out of GPU memory even at batch size 1; try --dtype float16 or a smaller model") \
                from None
        torch.cuda.empty_cache()
        stats.oom_retries += 1
        half = len(items) // 2
        stats.batch_size = min(stats.batch_size, half) if stats.batch_size else half
        return _with_oom_retry(work, items[:half], stats) + _with_oom_retry(work, items[half:], stats)
