"""evalkit from Python: evalkit.load(...).caption / .ask / .chat return plain records, as the commands do."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
from PIL import Image

import evalkit
from evalkit.api import Answer, Caption, ChatTurn
from evalkit.core.errors import EvalkitError
from evalkit.demo.bundled import SHAPES_DIR

IMAGES = [str(SHAPES_DIR / "images" / f"shapes_test_{n:06d}.png") for n in range(1, 5)]


@pytest.fixture(scope="module")
def model():
    return evalkit.load("blip2-tiny-opt")


def test_import_evalkit_stays_light():
    code = ("import sys, evalkit; assert callable(evalkit.load); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_caption_records_and_batch_size(model):
    captions = model.caption(IMAGES, batch_size=1)
    assert all(isinstance(c, Caption) and c.status == "ok" and c.caption for c in captions)
    assert [c.image for c in captions] == IMAGES and {c.prompt for c in captions} == {""}
    assert [c.caption for c in model.caption(IMAGES, batch_size=4)] == [c.caption for c in captions]
    assert [c.caption for c in model.caption(IMAGES, batch_size="auto")] == [c.caption for c in captions]
    for bad in (0, "many", True):
        with pytest.raises(EvalkitError, match="batch size must be a positive number or 'auto'"):
            model.caption(IMAGES, batch_size=bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        captions[0].caption = "edited"  # type: ignore[misc]
    unprompted = model.protocol("caption", prompt_variant="none")
    assert captions[0].to_json()["protocol_fingerprint"] == unprompted.fingerprint()


def test_pil_images_and_prompted_captions(model):
    with Image.open(IMAGES[0]) as image:
        from_memory, from_file = model.caption([image, IMAGES[0]], prompt="a photo of", num_beams=2)
    assert from_memory.image == "<image 0>" and from_memory.prompt == "a photo of"
    assert from_memory.caption == from_file.caption


def test_ask_every_question_of_every_image(model):
    answers = model.ask(IMAGES[:2], ["how many shapes are there?", "is there a red triangle?"])
    assert [(a.image, a.question) for a in answers] == [(i, q) for i in IMAGES[:2]
                                                        for q in ("how many shapes are there?",
                                                                  "is there a red triangle?")]
    assert all(isinstance(a, Answer) and a.prompt.startswith("Question: ") for a in answers)
    each = model.ask_each([IMAGES[1], IMAGES[0]], ["is there a red triangle?", "how many shapes are there?"])
    assert [a.answer for a in each] == [answers[3].answer, answers[0].answer]
    with pytest.raises(EvalkitError, match="2 images but 1 questions"):
        model.ask_each(IMAGES[:2], ["how many shapes are there?"])


def test_chat_keeps_earlier_turns(model):
    conversation = model.chat(IMAGES[0])
    first = conversation.ask("how many shapes are there?")
    second = conversation.ask("what color is the square?")
    assert isinstance(second, ChatTurn) and second.turn == 1 and second.kept_turns == 1
    assert second.prompt.startswith(f"Question: how many shapes are there? Answer: {first.answer}. Question:")
    conversation.reset()
    assert conversation.ask("what color is the square?").prompt == "Question: what color is the square? Answer:"
    with pytest.raises(EvalkitError, match="too long"):
        conversation.ask("what " * 80)


def test_refusals(model):
    with pytest.raises(EvalkitError, match="retrieval"):
        evalkit.load("blip2-tiny-itm")
    with pytest.raises(EvalkitError, match="dtype is chosen when the model is loaded"):
        model.caption(IMAGES[0], dtype="float16")
    with pytest.raises(EvalkitError, match="unknown generation protocol setting 'beams'"):
        model.caption(IMAGES[0], beams=2)
    with pytest.raises(EvalkitError, match="one image is needed"):
        model.chat(SHAPES_DIR / "images")
