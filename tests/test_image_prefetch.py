"""Parallel decode + preprocess gives the serial path's predictions, and bad images behave as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import GenerationProtocol
from evalkit.core.samples import Sample
from evalkit.data.images import ImageSource
from evalkit.demo.bundled import MODELS_DIR
from evalkit.core.samples import order_by_image
from evalkit.inference.generation_runner import load_images, run_single_turn
from evalkit.inference.image_prefetch import ImagePrefetcher, StageTimes, default_workers
from evalkit.models.blip2_generation import Blip2Generator
from evalkit.models.catalog import resolve_model
from evalkit.models.loading import load_checkpoint

COCO_IMAGES = Path(__file__).parent / "fixtures" / "coco_val2017" / "val2017"
QUESTIONS = ["what is this?", "how many people are there?", "is there a red ball in the picture?"]


def _samples(image_dir: Path, per_image: int = 2) -> list[Sample]:
    files = sorted(image_dir.glob("*.jpg"))
    return [Sample(f"{f.stem}-{q}", str(f), QUESTIONS[(i + q) % len(QUESTIONS)], ("yes",))
            for i, f in enumerate(files) for q in range(per_image)]


def _run(generator, samples, batch_size, workers, skip_bad=False) -> list[str]:
    lines: list[str] = []
    protocol = GenerationProtocol(prompt="Question: {question} Short answer:", num_beams=2, max_new_tokens=5)
    append = lambda predictions: lines.extend(json.dumps(p.to_json(), sort_keys=True) for p in predictions)
    run_single_turn(generator, samples, ImageSource(), protocol, append, batch_size, skip_bad,
                    decode_workers=workers)
    return sorted(lines)  # a batch journals its failed samples after its answers, so order follows batch size


@pytest.fixture(scope="module")
def generator() -> Blip2Generator:
    """The bundled trained tiny OPT: its answers differ between images and questions."""
    return Blip2Generator(load_checkpoint(resolve_model(str(MODELS_DIR / "blip2-tiny-opt")), "cpu"))


def test_workers_1_and_2_and_batch_size_1_write_the_same_predictions(generator):
    samples = _samples(COCO_IMAGES)
    reference = _run(generator, samples, batch_size=1, workers=1)
    assert len(reference) == len(samples)
    assert len({json.loads(line)["prediction"] for line in reference}) > 1  # equality means something
    for batch_size, workers in [(5, 1), (5, 2), (16, 2), (3, 4)]:
        assert _run(generator, samples, batch_size, workers) == reference, (batch_size, workers)


def test_prefetched_pixels_are_the_batch_pipeline_bits(generator):
    keys = [str(f) for f in sorted(COCO_IMAGES.glob("*.jpg"))]
    serial, _ = load_images(ImageSource(), keys, skip_bad=False)
    expected = generator.pixel_values([serial[k] for k in keys])
    one = lambda image: generator.pixel_values([image])[0]
    with ImagePrefetcher(ImageSource(), [keys[:3], keys[3:]], one, workers=2, skip_bad=False) as prefetch:
        loaded = {**prefetch.take(0)[0], **prefetch.take(1)[0]}
    assert torch.equal(torch.stack([loaded[k] for k in keys]), expected)


def _with_bad_images(tmp_path: Path) -> Path:
    for f in sorted(COCO_IMAGES.glob("*.jpg"))[:4]:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "000000000002_broken.jpg").write_bytes(b"not a jpeg")
    return tmp_path


def test_bad_images_become_failed_samples_as_in_the_serial_path(generator, tmp_path):
    samples = _samples(_with_bad_images(tmp_path))
    samples.append(Sample("missing", str(tmp_path / "missing.jpg"), "what?", ("yes",)))
    serial = _run(generator, samples, batch_size=1, workers=1, skip_bad=True)
    assert _run(generator, samples, batch_size=4, workers=2, skip_bad=True) == serial
    failed = [json.loads(line) for line in serial if json.loads(line)["status"] == "failed"]
    assert {f["error"] for f in failed} == {"bad image: cannot decode (UnidentifiedImageError)",
                                            "bad image: file not found"}
    assert len(failed) == 3


def test_a_bad_image_without_skipping_is_the_same_one_line_error(generator, tmp_path):
    samples = _samples(_with_bad_images(tmp_path))
    keys = list(dict.fromkeys(s.image for s in order_by_image(samples)))
    with pytest.raises(EvalkitError) as serial:
        load_images(ImageSource(), keys, skip_bad=False)
    journaled: list[str] = []
    with pytest.raises(EvalkitError) as parallel:
        protocol = GenerationProtocol(max_new_tokens=3)
        run_single_turn(generator, samples, ImageSource(), protocol, journaled.extend, 2, decode_workers=2)
    assert str(parallel.value) == str(serial.value)
    assert "--skip-bad-images" in str(parallel.value)


def test_stage_times_and_worker_setting(generator, monkeypatch):
    times = StageTimes()
    protocol = GenerationProtocol(max_new_tokens=3)
    run_single_turn(generator, _samples(COCO_IMAGES, 1), ImageSource(), protocol, lambda p: None, 4,
                    decode_workers=2, times=times)
    assert times.images == 8 and times.decode_preprocess > 0 and times.vision > 0 and times.generation > 0
    monkeypatch.setenv("EVALKIT_DECODE_WORKERS", "3")
    assert default_workers() == 3
    monkeypatch.setenv("EVALKIT_DECODE_WORKERS", "zero")
    with pytest.raises(EvalkitError):
        default_workers()


def test_chat_runner_with_parallel_decoding_gives_the_serial_answers(generator):
    from evalkit.inference.chat_runner import run_chat

    protocol = GenerationProtocol(prompt="Question: {question} Short answer:", max_new_tokens=4, chat=True,
                                  chat_turn="Question: {question} Short answer: {answer}")
    samples = _samples(COCO_IMAGES, per_image=3)
    outputs = []
    for batch_size, workers in [(1, 1), (3, 2), (8, 2)]:
        lines: list[str] = []
        run_chat(generator, samples, ImageSource(), protocol,
                 lambda ps: lines.extend(json.dumps(p.to_json(), sort_keys=True) for p in ps), batch_size,
                 decode_workers=workers)
        outputs.append(sorted(lines))
    assert outputs[0] == outputs[1] == outputs[2] and len(outputs[0]) == len(samples)
    assert len({json.loads(line)["prediction"] for line in outputs[0]}) > 1, outputs[0]  # the answers differ
