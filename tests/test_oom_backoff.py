"""CUDA out-of-memory back-off, on CPU: the generator raises torch.cuda.OutOfMemoryError on purpose whenever it
gets more than a few items; the runner must halve the batch, retry, and end with the answers of a batch-size-1 run."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import run_cli
from evalkit.models.blip2_generation import Blip2Generator

FAST = ["--num-beams", "2", "--max-new-tokens", "4", "-q"]
MAX_PROMPTS = 3  # generate() runs out of "memory" above this many prompts
MAX_IMAGES = 1  # encode_images() above this many images


def _run(model: str, results: Path, batch_size: int, capsys) -> tuple[dict, dict[str, str]]:
    code, _, err = run_cli(["run", "shapes-vqa", "-m", str(model), "--limit", "12", "--batch-size", str(batch_size),
                            "--results", str(results), *FAST], capsys)
    assert code == 0, err
    (run_json,) = results.glob("*/shapes-vqa/*/run.json")
    lines = [json.loads(line) for line in (run_json.parent / "predictions.jsonl").read_text().splitlines()]
    return json.loads(run_json.read_text()), {line["id"]: line["prediction"] for line in lines}


def oom_above_limits(monkeypatch) -> dict:
    """Make generate/encode_images raise CUDA OOM above the limits; returns the sizes of the calls that ran
    and the number of torch.cuda.empty_cache() calls (a no-op on a CPU build, but it must be callable)."""
    seen = {"generate": [], "encode": [], "empty_cache": 0}
    generate, encode, empty_cache = Blip2Generator.generate, Blip2Generator.encode_images, torch.cuda.empty_cache

    def small_generate(self, query_embeds, prompts, protocol):
        if len(prompts) > MAX_PROMPTS:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")
        seen["generate"].append(len(prompts))
        return generate(self, query_embeds, prompts, protocol)

    def small_encode(self, pixel_values):
        if len(pixel_values) > MAX_IMAGES:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")
        seen["encode"].append(len(pixel_values))
        return encode(self, pixel_values)

    def counted_empty_cache():
        seen["empty_cache"] += 1
        empty_cache()  # the real one

    monkeypatch.setattr(Blip2Generator, "generate", small_generate)
    monkeypatch.setattr(Blip2Generator, "encode_images", small_encode)
    monkeypatch.setattr(torch.cuda, "empty_cache", counted_empty_cache)
    return seen


def test_oom_halves_the_batch_and_gives_the_batch_size_1_answers(tmp_path, capsys, monkeypatch):
    # the bundled trained model: its answers differ between questions (a random tiny model's do not)
    _, single = _run("blip2-tiny-opt", tmp_path / "b1", 1, capsys)  # independent reference, no OOM
    seen = oom_above_limits(monkeypatch)
    record, backed_off = _run("blip2-tiny-opt", tmp_path / "b8", 8, capsys)
    assert backed_off == single and len(single) == 12
    assert len(set(single.values())) > 1  # different answers, so equality means something
    runtime = record["runtime"]
    assert runtime["oom_retries"] > 0 and seen["empty_cache"] == runtime["oom_retries"]
    assert runtime["batch_size"] < 8 and runtime["batch_size"] <= MAX_PROMPTS
    assert seen["generate"] and max(seen["generate"]) <= MAX_PROMPTS
    assert seen["encode"] and max(seen["encode"]) <= MAX_IMAGES
    assert sum(seen["generate"]) == 12  # each question generated once, none dropped or repeated


def test_oom_at_batch_size_1_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    def always_oom(self, query_embeds, prompts, protocol):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (raised by the test)")

    monkeypatch.setattr(Blip2Generator, "generate", always_oom)
    code, out, err = run_cli(["run", "shapes-vqa", "-m", "blip2-tiny-opt", "--limit", "4", "--batch-size", "4",
                              "--results", str(tmp_path), *FAST], capsys)
    assert code == 2
    assert "out of GPU memory even at batch size 1" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*/shapes-vqa/*/run.json"))
