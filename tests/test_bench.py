"""`evalkit bench` smoke tests on CPU (nothing timed): the JSON has every field, the shipped configs build."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from evalkit.bench.random_model import read_config, shipped_configs
from evalkit.bench.synthetic_data import write_vqa_set

FIELDS = {"samples_per_s", "stages_s", "host_wait_fraction", "peak_gpu_memory_gb", "batch_size", "batch_size_used",
          "decode_workers", "baseline_per_image_loop", "ratio_to_baseline", "num_samples", "plain_generate_loop",
          "ratio_to_plain_generate_loop"}
STAGES = {"decode_preprocess_worker_s", "host_wait", "vision", "generation", "scoring"}


def _bench(args: list[str], capsys) -> dict:
    code, out, err = run_cli(["bench", *args], capsys)
    assert code == 0, err
    return json.loads(out)


def test_bench_tiny_runs_on_cpu_and_prints_the_json(capsys):
    result = _bench(["--tiny", "--num-samples", "12", "--baseline-samples", "2", "--device", "cpu"], capsys)
    assert FIELDS <= set(result) and STAGES == set(result["stages_s"])
    assert result["num_samples"] == 12 and result["peak_gpu_memory_gb"] is None
    assert result["samples_per_s"] > 0 and result["ratio_to_baseline"] > 0
    plain = result["plain_generate_loop"]
    assert plain["samples"] == 2 and plain["samples_per_s"] > 0 and "model.generate" in plain["what"]
    assert result["ratio_to_plain_generate_loop"] == pytest.approx(result["samples_per_s"] / plain["samples_per_s"],
                                                                   rel=0.02)
    assert result["protocol"] == {"num_beams": 5, "new_tokens": 10, "prompt": "Question: {question} Short answer:"}
    assert result["levers"]["batch_order"].startswith("image order")  # as `evalkit run`


@pytest.mark.parametrize("family", ["opt", "t5"])
def test_bench_random_weights_from_a_shipped_tiny_config(family, capsys):
    result = _bench(["--model", f"tiny-{family}", "--random-weights", "--task", "greedy30", "-n", "4",
                     "--batch-size", "2", "--workers", "2", "--max-new-tokens", "3", "--baseline-samples", "1",
                     "--device", "cpu"], capsys)
    assert result["batch_size"] == 2 and result["decode_workers"] == 2 and result["image_size"] == 224
    assert result["protocol"]["new_tokens"] == 3 and result["num_images"] == 4


def test_shipped_real_size_configs_match_the_reference_sizes():
    opt = read_config("blip2-opt-2.7b")["config"]
    assert (opt["vision_config"]["hidden_size"], opt["vision_config"]["num_hidden_layers"]) == (1408, 39)
    assert (opt["text_config"]["hidden_size"], opt["text_config"]["num_hidden_layers"]) == (2560, 32)
    assert read_config("blip2-flan-t5-xxl")["config"]["text_config"]["d_model"] == 4096
    assert {"blip2-opt-2.7b", "blip2-opt-6.7b", "blip2-flan-t5-xl", "blip2-flan-t5-xxl"} <= set(shipped_configs())


def test_bench_errors_are_one_line(capsys):
    code, _, err = run_cli(["bench", "--model", "blip2-opt-27b", "--random-weights"], capsys)
    assert code != 0 and "blip2-opt-2.7b" in err and "Traceback" not in err
    code, _, err = run_cli(["bench", "--tiny", "--task", "nocaps"], capsys)
    assert code != 0 and "unknown bench task" in err


def test_synthetic_set_is_coco_sized_jpegs_in_the_official_layout(tmp_path):
    from PIL import Image

    write_vqa_set(tmp_path, 3, 2, distinct=2)
    files = sorted((tmp_path / "val2014").glob("*.jpg"))
    assert len(files) == 3 and Image.open(files[2]).size == (640, 480)
    questions = json.loads((tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json").read_text())["questions"]
    assert len(questions) == 6


def test_bench_measures_every_task_and_lever_combination_with_one_load(capsys):
    results = _bench(["--tiny", "--task", "greedy30,vqav2", "--kv-cache", "dynamic,static", "--image-pipeline",
                      "device", "--length-sort", "on", "-n", "10", "--baseline-samples", "1", "--device", "cpu"],
                     capsys)
    assert [(r["task"], r["levers"]["kv_cache"]) for r in results] == [
        ("greedy30", "dynamic"), ("greedy30", "static"), ("vqav2", "dynamic"), ("vqav2", "static")]
    assert {r["levers"]["image_pipeline"] for r in results} == {"device"}
    assert all(r["batch_size"] == 8 and r["batch_size_probe_s"] is not None for r in results)  # auto on CPU
    vqa = results[2]["padding"]
    assert vqa["pad_fraction_sorted"] < vqa["pad_fraction_image_order"]  # mixed question lengths
    assert results[0]["padding"]["pad_fraction_image_order"] == 0  # one caption prompt: nothing to pad
    code, _, err = run_cli(["bench", "--tiny", "--kv-cache", "dynamic,paged"], capsys)
    assert code == 2 and "unknown --kv-cache value 'paged'" in err


# total parameters, BLIP-2 paper (arXiv 2301.12597) Table 1: an independent check that the shipped configs build
# the real architectures (built on the meta device: no memory, no time)
PAPER_TOTAL_PARAMETERS = {"blip2-opt-2.7b": 3.8e9, "blip2-opt-6.7b": 7.8e9, "blip2-flan-t5-xl": 4.1e9,
                          "blip2-flan-t5-xxl": 12.1e9}


@pytest.mark.parametrize("name", sorted(PAPER_TOTAL_PARAMETERS))
def test_shipped_configs_build_the_papers_parameter_counts(name):
    from evalkit.bench.random_model import random_checkpoint

    checkpoint = random_checkpoint(name, "meta")
    assert abs(checkpoint.num_parameters / PAPER_TOTAL_PARAMETERS[name] - 1) < 0.05, checkpoint.num_parameters


def test_the_itm_config_builds_the_retrieval_model():
    from evalkit.bench.random_model import random_checkpoint

    checkpoint = random_checkpoint("blip2-itm-vit-g", "meta")
    assert type(checkpoint.model).__name__ == "Blip2ForImageTextRetrieval"
    assert checkpoint.model.config.qformer_config.vocab_size == 30523  # the ITM checkpoints' (reference notes)
    assert 1.0e9 < checkpoint.num_parameters < 1.3e9  # ViT-g (~1B) + Q-Former (~0.1B)


@pytest.mark.parametrize("args", [["--tiny"], ["-m", "tiny-itm", "--random-weights"]])
def test_bench_retrieval_times_each_stage_and_projects_to_coco_5k(args, capsys):
    result = _bench([*args, "--task", "retrieval", "-n", "12", "--k", "4", "--device", "cpu"], capsys)
    assert result["num_images"] == 12 and result["num_texts"] == 60 and result["itm_pairs"] == 12 * 4 + 60 * 4
    assert {"images", "texts", "itc", "itm_rerank", "scoring", "host_wait"} == set(result["stages_s"])
    assert result["projected_coco_5k_s"] > result["seconds"] and 0 <= result["score_r_mean"] <= 100
    code, _, err = run_cli(["bench", "-m", "tiny-opt", "--random-weights", "--task", "retrieval", "-n", "2",
                            "--device", "cpu"], capsys)
    assert code == 2 and "needs an ITM model" in err
