"""One bench measurement: synthetic data -> real loader -> real runner -> VQA scorer, timed per stage,
against the per-image loop (decode, preprocess, encode, generate at batch size 1) in the same process."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from evalkit.bench.synthetic_data import write_vqa_set
from evalkit.core.protocol import GenerationProtocol
from evalkit.data.data_arg import parse_data_arg
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.inference.batch_plan import padding_tokens, plan_windows
from evalkit.inference.batch_size_probe import auto_batch_size
from evalkit.inference.generation_runner import prompt_lengths, render_prompt, run_single_turn
from evalkit.inference.image_prefetch import StageTimes, default_workers
from evalkit.metrics.vqa_accuracy import score_vqa
from evalkit.models.blip2_generation import Blip2Generator
from evalkit.models.loading import LoadedCheckpoint

# the generation length is fixed (min = max new tokens) so random weights cost what trained ones do
TASKS = {
    "vqav2": GenerationProtocol(name="paper", prompt="Question: {question} Short answer:", num_beams=5,
                                max_new_tokens=10, min_new_tokens=10, length_penalty=0.0),
    "coco-caption": GenerationProtocol(name="paper", prompt="a photo of", num_beams=5, max_new_tokens=30,
                                       min_new_tokens=30),
    "greedy30": GenerationProtocol(name="greedy", prompt="a photo of", num_beams=1, max_new_tokens=30,
                                   min_new_tokens=30),
}
QUESTIONS_PER_IMAGE = {"vqav2": 5, "coco-caption": 1, "greedy30": 1}  # VQAv2 val: 214,354 q / 40,504 images


def bench_protocol(task: str, max_new_tokens: int | None = None) -> GenerationProtocol:
    """The task's protocol with the generation length fixed."""
    protocol = TASKS[task]
    if max_new_tokens:
        protocol = replace(protocol, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
    return protocol


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_image_loop(generator: Blip2Generator, samples, images, protocol: GenerationProtocol) -> float:
    """Seconds for the per-image loop over ``samples``: open, preprocess, encode, generate, one at a time."""
    started = time.perf_counter()
    for sample in samples:
        pixels = generator.image_pipeline.batch([generator.image_pipeline.worker(images.open(sample.image))])
        generator.generate(generator.encode_images(pixels), [render_prompt(protocol, sample.question)], protocol)
    _sync(generator.device)
    return time.perf_counter() - started


def plain_generate_loop(checkpoint: LoadedCheckpoint, samples, images, protocol: GenerationProtocol) -> float:
    """Seconds for the loop a user writes from the transformers BLIP-2 docs, one sample at a time: the checkpoint's
    processor on (image, prompt), ``model.generate(**inputs, ...)`` with the protocol's decoding settings, then
    ``processor.batch_decode`` (no evalkit code on the path: the comparison people ask about)."""
    model, processor = checkpoint.model, checkpoint.processor
    started = time.perf_counter()
    with torch.inference_mode():
        for sample in samples:
            inputs = processor(images=images.open(sample.image), text=render_prompt(protocol, sample.question),
                               return_tensors="pt").to(checkpoint.device, checkpoint.dtype)
            output = model.generate(**inputs, num_beams=protocol.num_beams, max_new_tokens=protocol.max_new_tokens,
                                    min_new_tokens=protocol.min_new_tokens or None,
                                    length_penalty=protocol.length_penalty)
            processor.batch_decode(output, skip_special_tokens=True)
    _sync(checkpoint.device)
    return time.perf_counter() - started


@dataclass
class _Measured:
    """What one bench run measured (seconds unless named otherwise)."""

    samples: list
    batch: int
    probe_seconds: float | None
    baseline_samples: int
    baseline_seconds: float
    plain_loop_seconds: float | None
    run_seconds: float
    scoring_seconds: float
    times: StageTimes
    stats: object
    accuracy: object
    sort_by_length: bool


def run_bench(checkpoint: LoadedCheckpoint, task: str = "vqav2", num_samples: int = 64,
              batch_size: int | None = None, decode_workers: int | None = None, image_size: int | None = None,
              baseline_samples: int = 8, questions_per_image: int | None = None,
              max_new_tokens: int | None = None, work_dir: Path | None = None, kv_cache: str = "auto",
              image_pipeline: str = "lavis", sort_by_length: bool = False) -> dict:
    """Measure the batched runner and the per-image loop on the same synthetic VQAv2-format set; a JSON dict.
    ``batch_size`` None is ``--batch-size auto``: the probe's size on a GPU."""
    protocol = bench_protocol(task, max_new_tokens)
    per_image = questions_per_image or QUESTIONS_PER_IMAGE[task]
    workers = decode_workers or default_workers(checkpoint.device)
    generator = Blip2Generator(checkpoint, image_size, kv_cache, image_pipeline)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        data = write_vqa_set(Path(tmp), math.ceil(num_samples / per_image), per_image)
        sample_set = load_vqa_set(parse_data_arg(str(data)), "val")
        measured = _measure(generator, sample_set, sample_set.samples[:num_samples], protocol, batch_size, workers,
                            baseline_samples, sort_by_length)
    return _result(checkpoint, generator, task, protocol, per_image, workers, measured)


def _measure(generator: Blip2Generator, sample_set, samples: list, protocol: GenerationProtocol,
             batch_size: int | None, workers: int, baseline_samples: int, sort_by_length: bool) -> _Measured:
    """Probe (auto), warm up, time the per-image loop, then the batched run and its scoring."""
    device = generator.device
    probe_started = time.perf_counter()
    batch = batch_size or auto_batch_size(generator, [render_prompt(protocol, s.question) for s in samples],
                                          protocol, len(samples))
    probe_seconds = None if batch_size else time.perf_counter() - probe_started
    # warm-up (kernels, allocator, lazy imports) on a few samples, not counted
    run_single_turn(generator, samples[:min(len(samples), 2)], sample_set.images, protocol, lambda p: None, 2,
                    decode_workers=workers)
    baseline = samples[:max(1, min(baseline_samples, len(samples)))]
    baseline_seconds = per_image_loop(generator, baseline, sample_set.images, protocol)
    # random weights come without a transformers processor: no plain loop to compare with
    plain_loop_seconds = plain_generate_loop(generator.checkpoint, baseline, sample_set.images, protocol) \
        if callable(generator.checkpoint.processor) else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    predictions: list = []
    times = StageTimes()
    started = time.perf_counter()
    stats = run_single_turn(generator, samples, sample_set.images, protocol, predictions.extend, batch,
                            decode_workers=workers, times=times, sort_by_length=sort_by_length)
    _sync(device)
    run_seconds = time.perf_counter() - started
    scoring_started = time.perf_counter()
    answered = {int(p.id): p.prediction for p in predictions}
    accuracy = score_vqa([sample_set.annotations[q] for q in answered], answered)
    return _Measured(samples, batch, probe_seconds, len(baseline), baseline_seconds, plain_loop_seconds, run_seconds,
                     time.perf_counter() - scoring_started, times, stats, accuracy, sort_by_length)


def _result(checkpoint: LoadedCheckpoint, generator: Blip2Generator, task: str, protocol: GenerationProtocol,
            per_image: int, workers: int, m: _Measured) -> dict:
    """The bench's JSON for one measurement."""
    device, times = checkpoint.device, m.times
    samples_per_s = len(m.samples) / m.run_seconds
    baseline_rate = m.baseline_samples / m.baseline_seconds
    return {
        "model": checkpoint.entry.name, "task": task, "device": _device_name(device),
        "dtype": str(checkpoint.dtype).replace("torch.", ""), "image_size": generator.image_size,
        "levers": {"kv_cache": generator.kv_cache, "image_pipeline": generator.image_pipeline.name,
                   "attn_implementation": getattr(checkpoint.model.config, "_attn_implementation", None),
                   "batch_order": "length-sorted in windows of whole images" if m.sort_by_length
                   else "image order (length sorting off)"},
        "batch_size_probe_s": None if m.probe_seconds is None else round(m.probe_seconds, 3),
        "padding": _padding(generator, m.samples, protocol, m.batch),
        "protocol": {"num_beams": protocol.num_beams, "new_tokens": protocol.max_new_tokens,
                     "prompt": protocol.prompt},
        "num_samples": len(m.samples), "num_images": times.images, "questions_per_image": per_image,
        "batch_size": m.batch, "batch_size_used": m.stats.batch_size, "oom_retries": m.stats.oom_retries,
        "decode_workers": workers,
        "samples_per_s": round(samples_per_s, 2), "images_per_s": round(times.images / m.run_seconds, 2),
        "seconds": round(m.run_seconds, 4),
        "stages_s": {"decode_preprocess_worker_s": round(times.decode_preprocess, 4),
                     "host_wait": round(times.host_wait, 4), "vision": round(times.vision, 4),
                     "generation": round(times.generation, 4), "scoring": round(m.scoring_seconds, 4)},
        "host_wait_fraction": round(times.host_wait / m.run_seconds, 4),
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda" else None,
        "baseline_per_image_loop": {"samples": m.baseline_samples, "samples_per_s": round(baseline_rate, 3)},
        "ratio_to_baseline": round(samples_per_s / baseline_rate, 2),
        "plain_generate_loop": None if m.plain_loop_seconds is None else {
            "samples": m.baseline_samples, "samples_per_s": round(m.baseline_samples / m.plain_loop_seconds, 3),
            "what": "per sample: processor(images=, text=) -> model.generate(**inputs) -> batch_decode, as the "
                    "transformers BLIP-2 docs show"},
        "ratio_to_plain_generate_loop": None if m.plain_loop_seconds is None else
        round(samples_per_s * m.plain_loop_seconds / m.baseline_samples, 2),
        "score_accuracy": getattr(m.accuracy, "overall", None),
    }


def _padding(generator: Blip2Generator, samples, protocol: GenerationProtocol, batch: int) -> dict:
    """Pad tokens in the prompt batches with length sorting and without (image order), as fractions."""
    lengths = prompt_lengths(generator, {s.id: render_prompt(protocol, s.question) for s in samples}, protocol)
    length = lambda s: lengths[s.id]
    windows = plan_windows(samples, batch, length)
    image_order = [s for w in windows for s in w.samples]
    sorted_pads, tokens = padding_tokens([b for w in windows for b in w.batches], length)
    unsorted_pads, _ = padding_tokens([image_order[i:i + batch] for i in range(0, len(image_order), batch)], length)
    return {"pad_fraction_sorted": round(sorted_pads / (tokens + sorted_pads), 4),
            "pad_fraction_image_order": round(unsorted_pads / (tokens + unsorted_pads), 4)}


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
