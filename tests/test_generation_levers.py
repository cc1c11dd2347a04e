"""Throughput levers change time, never answers: attention kernels, the KV cache (static by default on CPU) and
--batch-size auto give the default run's predictions.jsonl byte for byte, and each is recorded in run.json."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import run_cli
from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import GenerationProtocol
from evalkit.inference import batch_size_probe
from evalkit.inference.batch_size_probe import auto_batch_size, probe_batch_size

RUN = ["run", "shapes-vqa", "--limit", "24", "-q", "--json", "--max-new-tokens", "5", "--num-beams", "2"]


def _run(model: str, results: Path, capsys, *extra: str) -> tuple[dict, bytes]:
    code, out, err = run_cli([*RUN, "-m", model, "--results", str(results), *extra], capsys)
    assert code == 0, err
    record = json.loads(out)
    (run_json,) = results.glob("*/shapes-vqa/*/run.json")
    return record, (run_json.parent / "predictions.jsonl").read_bytes()


@pytest.mark.parametrize("model", ["blip2-tiny-opt", "blip2-tiny-t5"])
def test_attention_kernels_static_cache_and_auto_batch_give_the_default_answers(model, tmp_path, capsys):
    default, expected = _run(model, tmp_path / "default", capsys, "--batch-size", "1")
    assert default["runtime"]["attn_implementation"]["language_model"] == "sdpa"  # transformers' default
    assert default["runtime"]["kv_cache"] == "static"  # --kv-cache auto on CPU
    assert len({json.loads(line)["prediction"] for line in expected.splitlines()}) > 2  # answers differ
    variants = {"eager": ["--attn-implementation", "eager", "--batch-size", "7"],
                "dynamic": ["--kv-cache", "dynamic", "--batch-size", "5"],
                "auto": ["--batch-size", "auto"]}
    for name, extra in variants.items():
        record, predictions = _run(model, tmp_path / name, capsys, *extra)
        assert predictions == expected, name
        assert record["metrics"] == default["metrics"]
    runtime = record["runtime"]  # the auto run: the CPU's fixed size, and what was asked for
    assert runtime["batch_size"] == batch_size_probe.CPU_BATCH and runtime["batch_size_requested"] == "auto"
    eager = json.loads(next((tmp_path / "eager").glob("*/shapes-vqa/*/run.json")).read_text())["runtime"]
    dynamic = json.loads(next((tmp_path / "dynamic").glob("*/shapes-vqa/*/run.json")).read_text())["runtime"]
    assert set(eager["attn_implementation"].values()) == {"eager"} and dynamic["kv_cache"] == "dynamic"


class _FakeGenerator:
    """Runs out of "GPU memory" above ``fits`` images; records what the probe asked for."""

    def __init__(self, fits: int):
        self.fits, self.calls = fits, []
        self.device, self.image_size = torch.device("cuda"), 8

    def prompt_token_counts(self, prompts):
        return [len(p.split()) for p in prompts]

    def encode_images(self, pixels):
        if len(pixels) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")
        return pixels

    def generate(self, queries, prompts, protocol):
        self.calls.append((len(prompts), prompts[0], protocol.min_new_tokens, protocol.min_length))
        return [""] * len(prompts)


def test_the_probe_halves_to_the_largest_size_that_fits_on_the_longest_prompt(monkeypatch):
    monkeypatch.setattr(torch, "zeros", lambda *shape, device=None: [0] * shape[0])  # the fake only counts images
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    generator = _FakeGenerator(fits=40)
    protocol = GenerationProtocol(max_new_tokens=10, min_length=8)
    prompts = ["a b", "what is the man holding in his hand", "is it red"]
    assert auto_batch_size(generator, prompts, protocol, samples=10_000) == 32  # 512, 256, 128, 64 ran out
    assert generator.calls == [(32, "what is the man holding in his hand", 10, 0)]  # full length, longest prompt
    assert auto_batch_size(_FakeGenerator(fits=1000), prompts, protocol, samples=100) == 128  # not above the run
    with pytest.raises(EvalkitError, match="even at batch size 1"):
        probe_batch_size(_FakeGenerator(fits=0), "a", protocol, start=4)


def test_auto_batch_size_on_cpu_is_the_fixed_size():
    generator = SimpleNamespace(device=torch.device("cpu"))
    assert auto_batch_size(generator, ["a"], GenerationProtocol(), 100) == batch_size_probe.CPU_BATCH


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "many"], "--batch-size must be a whole number or auto (got 'many')"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--kv-cache", "fast"], "--kv-cache 'fast' is not one of auto, dynamic, static"),
    (["--attn-implementation", "flash"], "--attn-implementation 'flash' is not one of eager, sdpa, flash_attention_2"),
    (["--image-pipeline", "gpu"], "--image-pipeline 'gpu' is not one of lavis, device"),
])
def test_bad_lever_values_are_one_line_errors(args, message, tmp_path, capsys):
    code, out, err = run_cli(["run", "shapes-vqa", "-m", "blip2-tiny-opt", "--results", str(tmp_path), *args],
                             capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_the_device_image_pipeline_is_recorded_keyed_and_not_reportable(tmp_path, capsys):
    from evalkit.models.device_image_pipeline import PIPELINE as DEVICE_PIPELINE
    from evalkit.models.image_preprocessing import PIPELINE as LAVIS_PIPELINE

    lavis, lavis_predictions = _run("blip2-tiny-opt", tmp_path / "lavis", capsys)
    device, device_predictions = _run("blip2-tiny-opt", tmp_path / "device", capsys, "--image-pipeline", "device")
    assert lavis["runtime"]["image_pipeline"] == LAVIS_PIPELINE and device["runtime"]["image_pipeline"] == DEVICE_PIPELINE
    assert device["journal_header"]["image_pipeline"] == "device/width-then-height"
    assert lavis["journal_header"]["image_pipeline"] == "lavis/pil-width-then-height"
    assert device["run_id"] != lavis["run_id"]  # a journal of one never resumes as the other
    assert not device["reportable"] and any("--image-pipeline device" in r for r in device["not_reportable_reasons"])
    same = sum(a == b for a, b in zip(lavis_predictions.splitlines(), device_predictions.splitlines()))
    assert same >= 20  # pixels within 2 levels: nearly every answer is the LAVIS pipeline's (24 samples)
