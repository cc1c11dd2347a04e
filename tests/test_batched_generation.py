"""Batched generation gives the same answers as batch size 1 (OPT and T5, greedy and beam)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.models.catalog import resolve_model
from evalkit.models.blip2_generation import Blip2Generator
from evalkit.models.loading import load_checkpoint
from evalkit.core.protocol import GenerationProtocol

PROMPTS = ["a photo of", "Question: what color is the car? Short answer:", "", "a dog",
           "how many people are there in the park today", "is", "Question: a", "the quick brown fox jumps"]


def _images(n: int) -> list[Image.Image]:
    return [Image.fromarray(np.random.RandomState(i).randint(0, 255, (40, 48, 3), dtype=np.uint8)) for i in range(n)]


def _generator(path) -> Blip2Generator:
    return Blip2Generator(load_checkpoint(resolve_model(str(path)), "cpu"))


@pytest.mark.parametrize("family", ["opt", "t5"])
@pytest.mark.parametrize("num_beams", [1, 4])
def test_batch_of_8_equals_batch_of_1(family, num_beams, request):
    generator = _generator(request.getfixturevalue(f"tiny_{family}"))
    queries = generator.encode_images(generator.pixel_values(_images(8)))
    protocol = GenerationProtocol(num_beams=num_beams, max_new_tokens=8, min_new_tokens=2)
    batched = generator.generate(queries, PROMPTS, protocol)
    single = [generator.generate(queries[i:i + 1], [PROMPTS[i]], protocol)[0] for i in range(8)]
    assert batched == single
    assert len(set(single)) > 2  # the tiny model gives different answers, so equality means something


def test_right_padding_for_opt_changes_answers(tiny_opt):
    """The check above can fail: OPT with right padding continues from pad tokens."""
    generator = _generator(tiny_opt)
    queries = generator.encode_images(generator.pixel_values(_images(8)))
    protocol = GenerationProtocol(num_beams=1, max_new_tokens=8, min_new_tokens=2)
    single = [generator.generate(queries[i:i + 1], [PROMPTS[i]], protocol)[0] for i in range(8)]
    generator.tokenizer.padding_side = "right"
    assert generator.generate(queries, PROMPTS, protocol) != single


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_cached_image_path_equals_transformers_generate(family, request):
    """Encoding once + generating on cached query embeddings == Blip2ForConditionalGeneration.generate."""
    generator = _generator(request.getfixturevalue(f"tiny_{family}"))
    model, processor = generator.model, generator.processor
    images = _images(3)
    prompts = PROMPTS[:2] + ["how many people are there in the park today"]
    protocol = GenerationProtocol(num_beams=3, max_new_tokens=6, min_new_tokens=1)
    ours = generator.generate(generator.encode_images(generator.pixel_values(images)), prompts, protocol)
    for image, prompt, answer in zip(images, prompts, ours):
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**inputs, **generator.generation_kwargs(protocol))
        if generator.decoder_only:
            output = output[:, inputs["input_ids"].shape[1]:]
        assert processor.tokenizer.decode(output[0], skip_special_tokens=True).strip() == answer


def test_stop_at_newline_cuts_the_answer():
    from evalkit.models.blip2_generation import clean_answer

    assert clean_answer(" two cats\nQuestion: x", True) == "two cats"
    assert clean_answer(" two cats\nQuestion: x", False) == "two cats\nQuestion: x"
