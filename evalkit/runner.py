"""The runner owns batching: it groups samples by image, encodes each image once, generates in
batches, halves the batch on GPU out-of-memory, and journals every finished batch."""

from __future__ import annotations

import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from evalkit.data.images import BadImageError, ImageSource
from evalkit.errors import EvalkitError
from evalkit.journal import PredictionJournal
from evalkit.models.blip2_generation import Blip2Generator
from evalkit.protocol import Protocol
from evalkit.samples import Prediction, Sample

Progress = Callable[[int], None]  # called with the number of samples just finished


@dataclass
class RunStats:
    """What happened while generating (this invocation only)."""

    generated: int = 0
    failed: int = 0
    generation_seconds: float = 0.0
    images_encoded: int = 0
    batch_size: int = 0
    oom_retries: int = 0
    failures: list[str] = field(default_factory=list)


def render_prompt(template: str, question: str) -> str:
    """Fill ``{question}``; plain replace, so braces inside a question are kept as they are."""
    return template.replace("{question}", question)


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


def run_single_turn(generator: Blip2Generator, samples: Sequence[Sample], images: ImageSource, protocol: Protocol,
                    journal: PredictionJournal, batch_size: int, skip_bad_images: bool = False,
                    progress: Progress | None = None) -> RunStats:
    """Generate one answer per sample, journaling each finished batch; returns run statistics."""
    stats = RunStats(batch_size=batch_size)
    ordered = order_by_image(samples)
    cache = _ImageCache(capacity=max(4, batch_size))
    batches = [ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size)]
    known_bad: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=1) as pool:  # decode the next batch's images while this one runs
        pending = pool.submit(load_images, images, _new_keys(batches[0], cache), skip_bad_images) if batches else None
        for index, batch in enumerate(batches):
            loaded, bad = pending.result()
            known_bad.update(bad)
            if index + 1 < len(batches):
                pending = pool.submit(load_images, images, _new_keys(batches[index + 1], cache, batch),
                                      skip_bad_images)
            started = time.perf_counter()
            predictions = _generate_batch(generator, batch, loaded, known_bad, cache, protocol, stats)
            stats.generation_seconds += time.perf_counter() - started
            journal.append(predictions)
            stats.generated += len(predictions)
            if progress:
                progress(len(predictions))
    return stats


def _new_keys(batch: Sequence[Sample], cache: _ImageCache, previous: Sequence[Sample] = ()) -> list[str]:
    carried = {s.image for s in previous}
    keys = []
    for sample in batch:
        if sample.image not in keys and cache.get(sample.image) is None and sample.image not in carried:
            keys.append(sample.image)
    return keys


def _generate_batch(generator: Blip2Generator, batch: Sequence[Sample], loaded: dict, bad: dict[str, str],
                    cache: _ImageCache, protocol: Protocol, stats: RunStats) -> list[Prediction]:
    good = [s for s in batch if s.image not in bad]
    failed = [Prediction(s.id, render_prompt(protocol.prompt, s.question), "", s.references, "failed",
                         f"bad image: {bad[s.image]}", image=s.image) for s in batch if s.image in bad]
    stats.failed += len(failed)
    stats.failures += [p.error for p in failed]
    if not good:
        return failed
    to_encode = [key for key in dict.fromkeys(s.image for s in good) if cache.get(key) is None]
    if to_encode:
        embeds = _with_oom_retry(lambda part: generator.encode_images(generator.pixel_values([loaded[k] for k in part])),
                                 to_encode, stats)
        for key, embed in zip(to_encode, embeds):
            cache.put(key, embed)
        stats.images_encoded += len(to_encode)
    prompts = [render_prompt(protocol.prompt, s.question) for s in good]
    queries = torch.stack([cache.get(s.image) for s in good])
    answers = _with_oom_retry(
        lambda part: generator.generate(queries[part[0]:part[-1] + 1], [prompts[i] for i in part], protocol),
        list(range(len(good))), stats)
    done = [Prediction(s.id, p, a, s.references, image=s.image, extra=s.meta_dict())
            for s, p, a in zip(good, prompts, answers)]
    return done + failed


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


def chat_prompt(protocol: Protocol, history: Sequence[tuple[str, str]], question: str,
                count_tokens: Callable[[str], int], budget: int) -> tuple[str, int]:
    """The multi-turn prompt: earlier (question, answer) turns, then the current question.

    Oldest turns are dropped first until the prompt fits ``budget`` tokens; returns the prompt
    and how many earlier turns it keeps.
    """
    current = render_prompt(protocol.prompt, question)
    turns = [protocol.chat_turn.replace("{question}", q).replace("{answer}", a) for q, a in history]
    while True:
        prompt = " ".join(turns + [current])
        if not turns or count_tokens(prompt) <= budget:
            return prompt, len(turns)
        turns = turns[1:]


def run_chat(generator: Blip2Generator, samples: Sequence[Sample], images: ImageSource, protocol: Protocol,
             journal: PredictionJournal, batch_size: int, skip_bad_images: bool = False,
             progress: Progress | None = None) -> RunStats:
    """Ask each image's questions one after another in one conversation, batched across images.

    Each prompt holds the earlier questions and the model's own answers; the journal is written per
    group of images once all their turns are done, so a resumed run never holds half a conversation.
    """
    stats = RunStats(batch_size=batch_size)
    conversations: OrderedDict[str, list[Sample]] = OrderedDict()
    for sample in samples:
        conversations.setdefault(sample.image, []).append(sample)
    keys = list(conversations)
    context = min(protocol.max_context_tokens, generator.max_positions or protocol.max_context_tokens)
    budget = context - generator.num_query_tokens - protocol.max_new_tokens
    for start in range(0, len(keys), batch_size):
        group = keys[start:start + batch_size]
        loaded, bad = load_images(images, group, skip_bad_images)
        predictions: list[Prediction] = []
        for key in group:
            if key in bad:
                for s in conversations[key]:
                    predictions.append(Prediction(s.id, "", "", s.references, "failed", f"bad image: {bad[key]}",
                                                  image=key))
                    stats.failed += 1
        good = [k for k in group if k not in bad]
        started = time.perf_counter()
        if good:
            embeds = dict(zip(good, generator.encode_images(generator.pixel_values([loaded[k] for k in good]))))
            stats.images_encoded += len(good)
            history: dict[str, list[tuple[str, str]]] = {k: [] for k in good}
            for turn in range(max(len(conversations[k]) for k in good)):
                active = [k for k in good if turn < len(conversations[k])]
                asked = [conversations[k][turn] for k in active]
                built = [chat_prompt(protocol, history[k], s.question, generator.prompt_token_count, budget)
                         for k, s in zip(active, asked)]
                answers = generator.generate(torch.stack([embeds[k] for k in active]), [b[0] for b in built],
                                             protocol)
                for key, sample, (prompt, kept), answer in zip(active, asked, built, answers):
                    history[key].append((sample.question, answer))
                    predictions.append(Prediction(sample.id, prompt, answer, sample.references, image=key,
                                                  extra={**sample.meta_dict(), "turn": turn,
                                                         "history_turns": kept}))
        stats.generation_seconds += time.perf_counter() - started
        journal.append(predictions)
        stats.generated += len(predictions)
        if progress:
            progress(len(predictions))
    return stats
