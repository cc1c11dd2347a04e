"""Known answers from the trained demo models: the harness must clear floors a broken harness cannot,
a deliberately broken setting must lower the score, and compare must see a degraded model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from evalkit.demo.bundled import MODELS_DIR, SHAPES_DIR

# Floors agreed from measurements (evalkit/demo/MODELS.md): the shipped weights and two retrains with
# other seeds score at least CIDEr 636, VQA 97.7, R@1 98.0; the floors leave more than twice the
# seed-to-seed spread as margin.
FLOORS = {
    ("shapes-caption", "blip2-tiny-opt", "CIDEr"): 550.0,
    ("shapes-caption", "blip2-tiny-t5", "CIDEr"): 550.0,
    ("shapes-vqa", "blip2-tiny-opt", "accuracy"): 90.0,
    ("shapes-vqa", "blip2-tiny-t5", "accuracy"): 90.0,
    ("shapes-retrieval", "blip2-tiny-itm", "txt_r1"): 90.0,
    ("shapes-retrieval", "blip2-tiny-itm", "img_r1"): 90.0,
}
FAST_VQA = ["--limit", "120", "-q"]


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("demo") / "results"
    from evalkit.cli.demo_command import run_demo

    run_demo(results, batch_size=None, device="cpu", show_progress=False, chat=True)
    return results


def _record(results: Path, model: str, task: str) -> dict:
    (run_json,) = (results / model / task).glob("*/run.json")
    return json.loads(run_json.read_text())


@pytest.mark.parametrize("task, model, metric", list(FLOORS))
def test_trained_models_clear_their_floors(demo_results, task, model, metric):
    record = _record(demo_results, model, task)
    assert record["reportable"], record["not_reportable_reasons"]
    assert record["metrics"][metric]["value"] >= FLOORS[(task, model, metric)]


def test_chat_runs_record_the_single_turn_score(demo_results):
    record = _record(demo_results, "blip2-tiny-opt", "shapes-chat")
    single = _record(demo_results, "blip2-tiny-opt", "shapes-vqa")
    assert record["comparison"]["other"] == single["metrics"]["accuracy"]["value"]


def test_report_over_the_demo_runs(demo_results, capsys):
    code, out, err = run_cli(["report", str(demo_results)], capsys)
    assert code == 0, err
    assert "blip2-tiny-opt" in out and "blip2-tiny-t5" in out and "blip2-tiny-itm" in out
    assert (demo_results / "LEADERBOARD.md").exists() and (demo_results / "LEADERBOARD.csv").exists()
    html = (demo_results / "report.html").read_text()
    assert "data:image/" in html and "blip2-tiny-t5" in html


def _vqa_accuracy(generator, samples, annotations, batch_size=8):
    from evalkit.data.images import ImageSource
    from evalkit.metrics.vqa_accuracy import score_vqa
    from evalkit.core.registry import get_task

    protocol = get_task("shapes-vqa").protocol_for("opt")
    images = ImageSource()
    answers = {}
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        queries = generator.encode_images(generator.pixel_values([images.open(s.image) for s in batch]))
        prompts = [protocol.prompt.replace("{question}", s.question) for s in batch]
        for sample, answer in zip(batch, generator.generate(queries, prompts, protocol)):
            answers[int(sample.id)] = answer
    return score_vqa([annotations[int(s.id)] for s in samples], answers).overall


def test_right_padding_for_opt_lowers_the_score():
    from evalkit.data.data_arg import parse_data_arg
    from evalkit.data.vqa_datasets import load_vqa_set
    from evalkit.models.catalog import resolve_model
    from evalkit.models.blip2_generation import Blip2Generator
    from evalkit.models.loading import load_checkpoint
    from evalkit.core.registry import get_task

    task = get_task("shapes-vqa")
    sample_set = load_vqa_set(parse_data_arg(str(SHAPES_DIR)), "test", None, task.columns)
    samples = sample_set.samples[:96]
    assert len({len(s.question) for s in samples[:8]}) > 1  # mixed prompt lengths in a batch
    generator = Blip2Generator(load_checkpoint(resolve_model("blip2-tiny-opt"), "cpu"))
    right = _vqa_accuracy(generator, samples, sample_set.annotations)
    assert generator.tokenizer.padding_side == "left"
    generator.tokenizer.padding_side = "right"
    wrong = _vqa_accuracy(generator, samples, sample_set.annotations)
    assert wrong < right - 10


def test_a_wrong_prompt_lowers_the_score(demo_results, tmp_path, capsys):
    code, _, err = run_cli(["run", "shapes-vqa", "-m", "blip2-tiny-opt", "--prompt", "{question}",
                            "--results", str(tmp_path), "--batch-size", "16", "-q"], capsys)
    assert code == 0, err
    wrong = _record(tmp_path, "blip2-tiny-opt", "shapes-vqa")["metrics"]["accuracy"]["value"]
    right = _record(demo_results, "blip2-tiny-opt", "shapes-vqa")["metrics"]["accuracy"]["value"]
    assert wrong < right - 10


@pytest.fixture(scope="module")
def degraded_opt(tmp_path_factory) -> Path:
    from safetensors.torch import load_file, save_file

    target = tmp_path_factory.mktemp("degraded") / "blip2-tiny-opt-degraded"
    shutil.copytree(MODELS_DIR / "blip2-tiny-opt", target)
    weights = load_file(target / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    noisy = {name: (t + 0.5 * t.float().std() * torch.randn(t.shape, generator=generator)).to(t.dtype)
             if name.startswith("language_model") and t.is_floating_point() and t.numel() > 1 else t
             for name, t in weights.items()}
    save_file(noisy, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_compare_flags_a_degraded_model_and_passes_an_identical_rerun(degraded_opt, tmp_path, capsys):
    base = ["run", "shapes-vqa", "--results", str(tmp_path), "--batch-size", "16", *FAST_VQA]
    assert run_cli(base + ["-m", "blip2-tiny-opt"], capsys)[0] == 0
    assert run_cli(base + ["-m", "blip2-tiny-opt", "--run-id", "again"], capsys)[0] == 0
    assert run_cli(base + ["-m", str(degraded_opt)], capsys)[0] == 0
    runs = sorted((tmp_path / "blip2-tiny-opt" / "shapes-vqa").iterdir())
    first = next(r for r in runs if r.name != "again")
    degraded = next((tmp_path / "blip2-tiny-opt-degraded" / "shapes-vqa").iterdir())
    code, out, _ = run_cli(["compare", str(first), str(degraded)], capsys)
    assert code == 1 and "regression" in out
    code, out, _ = run_cli(["compare", str(first), str(tmp_path / "blip2-tiny-opt" / "shapes-vqa" / "again")], capsys)
    assert code == 0
    assert run_cli(base[:-3] + ["-m", "blip2-tiny-opt", "--limit", "60", "-q"], capsys)[0] == 0
    other = next(r for r in (tmp_path / "blip2-tiny-opt" / "shapes-vqa").iterdir() if r not in runs)
    code, _, err = run_cli(["compare", str(first), str(other)], capsys)
    assert code == 2 and ("data" in err or "sample_ids" in err)
