"""The runner owns batching: it takes the samples a window of whole images at a time (see batch_plan), encodes
each image once, generates in batches (length-sorted when asked), halves a batch on GPU out-of-memory, and
journals each finished window in image order."""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from evalkit.data.images import BadImageError, ImageSource
from evalkit.data.lavis_text import preprocess_question
from evalkit.core.errors import EvalkitError
from evalkit.models.blip2_generation import Blip2Generator
from evalkit.core.protocol import GenerationProtocol
from evalkit.core.samples import Prediction, Sample
from evalkit.core.scores import RunStats
from evalkit.inference.batch_plan import plan_windows
from evalkit.inference.cpu_threads import torch_threads_for
from evalkit.inference.image_prefetch import ImagePrefetcher, StageTimes, default_workers

Progress = Callable[[int], None]  # called with the number of samples just finished
Append = Callable[[list[Prediction]], None]  # journals a finished batch durably


def render_prompt(protocol: GenerationProtocol, question: str) -> str:
    """The protocol's prompt with ``{question}`` filled by the question, preprocessed as the protocol says;
    a plain replace, so braces inside a question are kept as they are."""
    return protocol.prompt.replace("{question}", preprocess_question(question, protocol.question_preprocess))


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


def prompt_lengths(generator: Blip2Generator, prompts: dict[str, str], protocol: GenerationProtocol) -> dict[str, int]:
    """Sample id -> the tokens its prompt takes in the batch (cut to ``max_prompt_tokens`` as the generator does)."""
    distinct = list(dict.fromkeys(prompts.values()))
    counts = dict(zip(distinct, generator.prompt_token_counts(distinct)))
    cap = protocol.max_prompt_tokens or None
    return {key: min(counts[prompt], cap) if cap else counts[prompt] for key, prompt in prompts.items()}


def run_single_turn(generator: Blip2Generator, samples: Sequence[Sample], images: ImageSource, protocol: GenerationProtocol,
                    append: Append, batch_size: int, skip_bad_images: bool = False,
                    progress: Progress | None = None, decode_workers: int | None = None,
                    times: StageTimes | None = None, sort_by_length: bool = False) -> RunStats:
    """Generate one answer per sample, journaling each finished window in image order; returns run statistics.

    The next window's images are decoded and preprocessed by ``decode_workers`` threads (default: the
    cores, see ``default_workers``) while this one runs; ``times`` collects the per-stage seconds.
    ``sort_by_length`` sorts each window's prompts by token length before cutting batches (fewer pad tokens;
    off by default: its CPU gain was within noise, see benchmarks/cpu_levers_bench.py and ``--length-sort``).
    """
    stats = RunStats(batch_size=batch_size)
    times = times if times is not None else StageTimes()
    prompts = {s.id: render_prompt(protocol, s.question) for s in samples}
    lengths = prompt_lengths(generator, prompts, protocol) if sort_by_length else {}
    windows = plan_windows(samples, batch_size, lambda s: lengths.get(s.id, 0))
    workers = stats.decode_workers = decode_workers or default_workers(generator.device)
    pipeline = generator.image_pipeline
    with torch_threads_for(generator.device), \
            ImagePrefetcher(images, [w.image_keys for w in windows], pipeline.worker, workers, skip_bad_images,
                            times) as prefetch:
        for index, window in enumerate(windows):
            loaded, bad = prefetch.take(index)
            started = time.perf_counter()
            embeds = encode_window(generator, [k for k in window.image_keys if k not in bad], loaded, batch_size,
                                   stats, times)
            answered: dict[str, Prediction] = {}
            for batch in window.batches:
                predictions = _generate_batch(generator, batch, embeds, bad, prompts, protocol, stats, times)
                answered.update((p.id, p) for p in predictions)
                if progress:
                    progress(len(predictions))
            finish_batch([answered[s.id] for s in window.samples], started, stats, append, None)
    return stats


def encode_window(generator: Blip2Generator, keys: list[str], loaded: dict, batch_size: int, stats: RunStats,
                  times: StageTimes | None = None) -> dict[str, torch.Tensor]:
    """Image key -> query embeddings, encoded ``batch_size`` images at a time (halved on out-of-memory)."""
    started = time.perf_counter()
    embeds: dict[str, torch.Tensor] = {}
    to_pixels = generator.image_pipeline.batch
    for start in range(0, len(keys), batch_size):
        part = keys[start:start + batch_size]
        encoded = _with_oom_retry(lambda chunk: generator.encode_images(to_pixels([loaded[k] for k in chunk])),
                                  part, stats)
        embeds.update(zip(part, encoded))
    _synchronize(generator)
    if times is not None:
        times.vision += time.perf_counter() - started
    stats.images_encoded += len(keys)
    return embeds


def finish_batch(predictions: list[Prediction], started: float, stats: RunStats, append: Append,
                 progress: Progress | None) -> None:
    """Count finished answers and their time, journal them, then advance the progress bar."""
    stats.generation_seconds += time.perf_counter() - started
    append(predictions)
    stats.generated += len(predictions)
    if progress:
        progress(len(predictions))


def _generate_batch(generator: Blip2Generator, batch: Sequence[Sample], embeds: dict[str, torch.Tensor],
                    bad: dict[str, str], prompts: dict[str, str], protocol: GenerationProtocol, stats: RunStats,
                    times: StageTimes | None = None) -> list[Prediction]:
    """One generation batch on the window's encoded images; samples of bad images become failed predictions."""
    good = [s for s in batch if s.image not in bad]
    failed = [Prediction(s.id, prompts[s.id], "", s.references, "failed", f"bad image: {bad[s.image]}",
                         image=s.image) for s in batch if s.image in bad]
    stats.failed += len(failed)
    stats.failures += [p.error for p in failed]
    if not good:
        return failed
    batch_prompts = [prompts[s.id] for s in good]
    queries = torch.stack([embeds[s.image] for s in good])
    started = time.perf_counter()
    answers = _with_oom_retry(
        lambda part: generator.generate(queries[part[0]:part[-1] + 1], [batch_prompts[i] for i in part], protocol),
        list(range(len(good))), stats)
    if times is not None:
        times.generation += time.perf_counter() - started
    done = [Prediction(s.id, p, a, s.references, image=s.image, extra=s.meta_dict())
            for s, p, a in zip(good, batch_prompts, answers)]
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
