"""VQAv2 runs end to end with a tiny model: official files, test-dev submission, chat mode, HF datasets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from evalkit.data.data_arg import parse_data_arg
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.demo.bundled import SHAPES_DIR
from evalkit.core.errors import EvalkitError

FAST = ["--num-beams", "2", "--max-new-tokens", "4", "-q"]
TRAINED = "blip2-tiny-opt"  # the bundled trained demo model (evalkit/demo/models): its answers differ
EXAMPLE = FIXTURES / "vqav2_format_example"


def _record(results: Path, task: str) -> tuple[dict, Path]:
    (run_json,) = results.glob(f"*/{task}/*/run.json")
    return json.loads(run_json.read_text()), run_json.parent


def test_official_files_with_coco_image_names(tiny_opt, tmp_path, capsys):
    sample_set = load_vqa_set(parse_data_arg(str(EXAMPLE / "questions.json")), "val")
    assert [s.id for s in sample_set.samples] == ["458752000", "458752001", "458752002"]
    assert sample_set.samples[0].image.endswith("COCO_train2014_000000458752.jpg")
    assert len(sample_set.samples[0].references) == 10
    code, out, err = run_cli(["run", "vqav2", "-m", str(tiny_opt), "--data", str(EXAMPLE / "questions.json"),
                              "--results", str(tmp_path), *FAST], capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path, "vqav2")
    # the BLIP-2 paper's OPT prompt, the question cleaned as LAVIS's blip_question does (lower case)
    assert record["protocol"]["prompt"] == "Question: {question} Answer:"
    assert record["runtime"]["images_encoded"] == 1  # three questions, one image, encoded once
    lines = [json.loads(l) for l in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert lines[1]["prompt"] == "Question: what position is this man playing? Answer:"
    assert record["details"]["vqa_metric"] == "official" and "perQuestionType" in record["details"]


def test_test_dev_split_writes_a_submission_file(tiny_opt, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    questions = json.loads((SHAPES_DIR / "v2_OpenEnded_shapes_test_questions.json").read_text())
    questions["data_subtype"] = "test-dev2015"
    questions["questions"] = questions["questions"][:12]
    (data / "v2_OpenEnded_shapes_test-dev2015_questions.json").write_text(json.dumps(questions))
    code, out, err = run_cli(["run", "shapes-vqa", "-m", str(tiny_opt), "--data", str(data), "--split", "test-dev",
                              "--images", str(SHAPES_DIR), "--column",
                              "image_pattern=images/shapes_test_{image_id:06d}.png", "--results", str(tmp_path / "r"),
                              *FAST], capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path / "r", "shapes-vqa")
    submission = json.loads((run_dir / record["official_predictions_file"]).read_text())
    assert sorted(row["question_id"] for row in submission) == sorted(q["question_id"] for q in questions["questions"])
    assert all(isinstance(row["answer"], str) for row in submission)
    assert record["metrics"] == {} and "submission_file" in record["details"]


def test_questions_without_annotations_are_an_error(tmp_path):
    shutil.copy(EXAMPLE / "questions.json", tmp_path / "questions.json")
    annotations = json.loads((EXAMPLE / "annotations.json").read_text())
    annotations["annotations"] = annotations["annotations"][:2]
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    with pytest.raises(EvalkitError, match="1 questions have no annotation"):
        load_vqa_set(parse_data_arg(str(tmp_path / "questions.json")), "val")


def test_chat_mode_keeps_the_conversation(tiny_t5, tmp_path, capsys):
    code, _, err = run_cli(["run", "shapes-chat", "-m", str(tiny_t5), "--limit", "9", "--results", str(tmp_path),
                            *FAST], capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path, "shapes-chat")
    assert record["protocol"]["chat"] is True
    lines = [json.loads(l) for l in (run_dir / "predictions.jsonl").read_text().splitlines()]
    by_image: dict[str, list[dict]] = {}
    for line in lines:
        by_image.setdefault(line["image"], []).append(line)
    conversation = max(by_image.values(), key=len)
    assert len(conversation) >= 2
    first, second = conversation[0], conversation[1]
    assert second["prompt"].startswith(first["prompt"][: -len("Answer:")].strip())
    assert f"Answer: {first['prediction']}." in second["prompt"] and second["extra"]["history_turns"] == 1
    # no single-turn run of the same questions yet: the record says so
    assert record["comparison"] == {"task": "shapes-vqa",
                                    "note": "no shapes-vqa run on the same data and weights to compare with"}
    code, _, err = run_cli(["run", "shapes-vqa", "-m", str(tiny_t5), "--limit", "9", "--results", str(tmp_path),
                            *FAST], capsys)
    assert code == 0, err
    single, _ = _record(tmp_path, "shapes-vqa")
    code, _, err = run_cli(["run", "shapes-chat", "-m", str(tiny_t5), "--limit", "9", "--results", str(tmp_path),
                            *FAST], capsys)  # re-scored from its journal, now beside the single-turn run
    assert code == 0, err
    again, _ = _record(tmp_path, "shapes-chat")
    assert again["counts"]["generated_this_invocation"] == 0 and again["metrics"] == record["metrics"]
    this, other = record["metrics"]["accuracy"]["value"], single["metrics"]["accuracy"]["value"]
    assert again["comparison"] == {"task": "shapes-vqa", "run_id": single["run_id"], "metric": "accuracy",
                                   "other": other, "this": this, "difference": round(this - other, 4)}


def test_hf_vqa_dataset(tiny_opt, tmp_path, capsys):
    import datasets

    annotations = {a["question_id"]: a for a in json.loads((EXAMPLE / "annotations.json").read_text())["annotations"]}
    questions = json.loads((EXAMPLE / "questions.json").read_text())["questions"]
    image = str(EXAMPLE / "COCO_train2014_000000458752.jpg")
    rows = {"question_id": [q["question_id"] for q in questions], "question": [q["question"] for q in questions],
            "image_id": [q["image_id"] for q in questions], "image": [image] * 3,
            "answers": [annotations[q["question_id"]]["answers"] for q in questions],
            "answer_type": ["other", "other", "other"], "question_type": ["what is", "what", "what color is the"]}
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "hf"))
    code, _, err = run_cli(["run", "vqav2", "-m", str(tiny_opt), "--data", f"hf:{tmp_path / 'hf'}",
                            "--split", "validation", "--results", str(tmp_path / "r"), *FAST], capsys)
    assert code == 0, err
    record, _ = _record(tmp_path / "r", "vqav2")
    assert record["data"]["format"] == "hf" and record["counts"]["samples"] == 3
    assert record["runtime"]["images_encoded"] == 1


def test_runner_encodes_each_image_once_and_batch_size_does_not_change_answers(tmp_path, capsys):
    """On the bundled trained model, whose answers differ between questions (a random model answers all alike,
    so any batching bug would give the same answers)."""
    outputs = {}
    for batch_size in (1, 7):
        results = tmp_path / f"b{batch_size}"
        code, _, err = run_cli(["run", "shapes-vqa", "-m", TRAINED, "--limit", "20", "--batch-size",
                                str(batch_size), "--results", str(results), *FAST], capsys)
        assert code == 0, err
        record, run_dir = _record(results, "shapes-vqa")
        lines = [json.loads(l) for l in (run_dir / "predictions.jsonl").read_text().splitlines()]
        assert record["runtime"]["images_encoded"] == len({l["image"] for l in lines})
        outputs[batch_size] = {l["id"]: l["prediction"] for l in lines}
    assert outputs[1] == outputs[7] and len(outputs[1]) == 20
    assert len(set(outputs[1].values())) > 1, outputs[1]  # the answers differ: equality means something


def test_resume_from_a_cut_journal_ends_with_the_full_result(tmp_path, capsys):
    args = ["run", "shapes-vqa", "-m", TRAINED, "--limit", "15", "--batch-size", "4", *FAST]
    assert run_cli(args + ["--results", str(tmp_path / "full")], capsys)[0] == 0
    full, full_dir = _record(tmp_path / "full", "shapes-vqa")
    assert run_cli(args + ["--results", str(tmp_path / "cut")], capsys)[0] == 0
    _, cut_dir = _record(tmp_path / "cut", "shapes-vqa")
    lines = (cut_dir / "predictions.jsonl").read_text().splitlines(keepends=True)
    # what a crash leaves: a few finished batches, half a line, no run.json
    (cut_dir / "predictions.jsonl").write_text("".join(lines[:6]) + lines[6][:17])
    (cut_dir / "run.json").unlink()
    code, _, err = run_cli(args + ["--results", str(tmp_path / "cut")], capsys)
    assert code == 0, err
    resumed, _ = _record(tmp_path / "cut", "shapes-vqa")
    assert resumed["counts"]["resumed_from_journal"] == 6 and resumed["counts"]["generated_this_invocation"] == 9
    assert resumed["metrics"] == full["metrics"]
    assert (cut_dir / "predictions.jsonl").read_text().count("\n") == 15
    read = lambda d: sorted((cut_dir if d == "cut" else full_dir).joinpath("predictions.jsonl").read_text().splitlines())
    assert read("cut") == read("full")
    answers = [json.loads(line)["prediction"] for line in read("full")]
    assert len(set(answers)) > 1, answers  # the answers differ: a resume that re-answered wrongly would show


def test_unprompted_captioning_generates_from_bos(tiny_opt, tiny_t5, tmp_path, capsys):
    for model in (tiny_opt, tiny_t5):
        code, _, err = run_cli(["run", "shapes-caption", "-m", str(model), "--prompt-variant", "none", "--limit", "4",
                                "--results", str(tmp_path), *FAST], capsys)
        assert code == 0, err
    run_files = sorted(tmp_path.glob("*/shapes-caption/*/run.json"))
    assert len(run_files) == 2
    for run_json in run_files:
        record = json.loads(run_json.read_text())
        assert record["protocol"]["prompt"] == "" and record["overrides"]["prompt_variant"] == "none"
        lines = [json.loads(l) for l in (run_json.parent / "predictions.jsonl").read_text().splitlines()]
        assert all(l["prompt"] == "" for l in lines) and any(l["prediction"] for l in lines)
