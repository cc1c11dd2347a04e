"""``--batch-size auto``: the largest batch that fits, found before the run on a worst-case batch.

The probe encodes a batch of blank images and generates the full ``max_new_tokens`` for the run's longest
prompt, so no batch of the run needs more memory; it starts at ``AUTO_START`` (or the run's size, if
smaller) and halves on out-of-memory. The runner still halves a batch that runs out of memory later.
Written here rather than with accelerate's ``find_executable_batch_size``, which shrinks by 10% a step
(uneven sizes, many retries) and whose arguments differ between accelerate versions.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import GenerationProtocol
from evalkit.models.blip2_generation import Blip2Generator

DEFAULT_BATCH_SIZE = {"cpu": 8, "cuda": 32, "mps": 8}  # a chat run's size, and a fixed size where asked
AUTO_START = 512  # beyond this, batches gain little on one H100/H200 (issue 12's anchors: 256 -> 512 is +10%)
CPU_BATCH = DEFAULT_BATCH_SIZE["cpu"]  # no memory signal on a CPU: a size that keeps the progress bar moving


def resolve_batch_size(generator: Blip2Generator, samples: Sequence, protocol: GenerationProtocol,
                       requested: int | str | None) -> int:
    """The batch size a run uses: the number asked for; ``auto`` (and None on a GPU) probes the largest that fits
    for single-turn runs (chat prompts grow turn by turn, so chat takes the device's default)."""
    from evalkit.inference.generation_runner import render_prompt

    device = generator.device.type
    if isinstance(requested, int):
        return requested
    if (requested == "auto" or (requested is None and device == "cuda")) and not protocol.chat:
        prompts = [render_prompt(protocol, s.question) for s in samples]
        return auto_batch_size(generator, prompts, protocol, len(samples))
    return DEFAULT_BATCH_SIZE.get(device, 8)


def auto_batch_size(generator: Blip2Generator, prompts: Sequence[str], protocol: GenerationProtocol,
                    samples: int) -> int:
    """The batch size to run with: the probe's on a GPU, ``CPU_BATCH`` elsewhere."""
    if generator.device.type != "cuda":
        return CPU_BATCH
    start = AUTO_START
    while start // 2 >= max(1, samples):  # no bigger than the run (a power of two)
        start //= 2
    return probe_batch_size(generator, longest_prompt(generator, prompts), protocol, start)


def longest_prompt(generator: Blip2Generator, prompts: Sequence[str]) -> str:
    """The prompt that takes the most tokens (the generator cuts it to the protocol's ``max_prompt_tokens``)."""
    distinct = list(dict.fromkeys(prompts)) or [""]
    counts = generator.prompt_token_counts(distinct)
    return max(zip(counts, distinct), key=lambda pair: pair[0])[1]


def probe_batch_size(generator: Blip2Generator, prompt: str, protocol: GenerationProtocol, start: int) -> int:
    """The largest of start, start/2, ... at which encode + full-length generation runs without running out of
    memory; a one-line error when even 1 does not fit."""
    worst = replace(protocol, min_new_tokens=protocol.max_new_tokens, min_length=0)
    size = max(1, start)
    while True:
        try:
            _worst_case_batch(generator, prompt, worst, size)
            return size
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise EvalkitError("out of GPU memory even at batch size 1; try --dtype float16 or a smaller "
                                   "model") from None
            torch.cuda.empty_cache()
            size //= 2


def _worst_case_batch(generator: Blip2Generator, prompt: str, protocol: GenerationProtocol, size: int) -> None:
    """Encode ``size`` blank images and generate the full length for ``prompt`` on each."""
    pixels = torch.zeros(size, 3, generator.image_size, generator.image_size, device=generator.device)
    generator.generate(generator.encode_images(pixels), [prompt] * size, protocol)
