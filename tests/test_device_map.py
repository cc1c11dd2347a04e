"""--device-map (accelerate) loads the model through accelerate's placement and gives the same predictions.

On a CPU-only machine `--device-map auto` has one device to fill, so it puts every module on "cpu": that test
checks the placement path and the record, not a split. The second test splits a model for real on CPU:
accelerate's second "device" there is its disk offload (the language model's weights in an offload folder,
loaded into each layer by accelerate's hooks at every forward), the path a model larger than one device takes.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from evalkit.core.protocol import GenerationProtocol
from evalkit.core.samples import Sample
from evalkit.data.images import ImageSource
from evalkit.demo.bundled import SHAPES_DIR
from evalkit.inference.generation_runner import run_single_turn
from evalkit.models.blip2_generation import Blip2Generator
from evalkit.models.catalog import resolve_model
from evalkit.models.loading import load_checkpoint


def _run(results: Path, capsys, *extra: str) -> tuple[dict, bytes]:
    code, out, err = run_cli(["run", "shapes-vqa", "-m", "blip2-tiny-t5", "--limit", "30", "-q", "--results",
                              str(results), "--json", *extra], capsys)
    assert code == 0, err
    record = json.loads(out)
    run_dir = results / "blip2-tiny-t5" / "shapes-vqa" / record["run_id"]
    return record, (run_dir / "predictions.jsonl").read_bytes()


def test_device_map_auto_gives_the_predictions_of_a_plain_load(tmp_path, capsys):
    plain, plain_lines = _run(tmp_path / "plain", capsys)
    mapped, mapped_lines = _run(tmp_path / "mapped", capsys, "--device-map", "auto")
    assert mapped_lines == plain_lines and mapped["metrics"] == plain["metrics"]
    assert len({json.loads(line)["prediction"] for line in plain_lines.splitlines()}) > 1  # answers differ
    assert plain["runtime"]["device_map"] is None
    assert mapped["runtime"]["device_map"]["requested"] == "auto"
    # CPU only: one device, so "auto" places every module on it (no split happens in this test)
    assert set(mapped["runtime"]["device_map"]["placement"].values()) == {"cpu"}


SPLIT = {"vision_model": "cpu", "query_tokens": "cpu", "qformer": "cpu", "language_projection": "cpu",
         "language_model": "disk"}


def _answers(checkpoint) -> list[tuple[str, str]]:
    questions = json.loads((SHAPES_DIR / "v2_OpenEnded_shapes_test_questions.json").read_text())["questions"][:16]
    samples = [Sample(str(q["question_id"]), str(SHAPES_DIR / "images" / f"shapes_test_{q['image_id']:06d}.png"),
                      q["question"]) for q in questions]
    protocol = GenerationProtocol(prompt="Question: {question} Short answer:", num_beams=2, max_new_tokens=4)
    journaled: list = []
    run_single_turn(Blip2Generator(checkpoint), samples, ImageSource(), protocol, journaled.extend, 4)
    return [(p.id, p.prediction) for p in journaled]


def test_a_model_split_over_cpu_and_disk_offload_gives_the_plain_answers(tmp_path, monkeypatch):
    from transformers import Blip2ForConditionalGeneration

    entry = resolve_model("blip2-tiny-t5")
    plain = _answers(load_checkpoint(entry, "cpu"))
    # evalkit passes its device map to from_pretrained as it is; disk offload also needs a folder to offload to
    real = Blip2ForConditionalGeneration.from_pretrained.__func__
    monkeypatch.setattr(Blip2ForConditionalGeneration, "from_pretrained", classmethod(
        lambda cls, *args, **kwargs: real(cls, *args, offload_folder=str(tmp_path / "offload"), **kwargs)))
    checkpoint = load_checkpoint(entry, "cpu", device_map=SPLIT)
    model = checkpoint.model
    assert set(model.hf_device_map.values()) == {"cpu", "disk"} and str(checkpoint.device) == "cpu"
    # the split is real: the language model holds no weights in memory, accelerate's hooks bring them from disk
    assert {p.device.type for p in model.language_model.parameters()} == {"meta"}
    assert {p.device.type for p in model.vision_model.parameters()} == {"cpu"}
    assert any(hasattr(module, "_hf_hook") for module in model.language_model.modules())
    # (the offload folder stays empty: safetensors weights are read from the checkpoint file itself)
    split = _answers(checkpoint)
    assert split == plain and len({answer for _, answer in plain}) > 1  # same answers, and they differ
