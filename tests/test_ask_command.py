"""`evalkit ask`: the answers of `evalkit run shapes-vqa`, a questions file, and its bad lines."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli
from evalkit.demo.bundled import SHAPES_DIR

SHAPE = SHAPES_DIR / "images" / "shapes_test_000001.png"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_answers_as_evalkit_run(tmp_path, capsys):
    code, _, err = run_cli(["run", "shapes-vqa", "-m", "blip2-tiny-t5", "--limit", "8", "--results",
                            str(tmp_path / "results"), "-q"], capsys)
    assert code == 0, err
    (run_dir,) = [p.parent for p in (tmp_path / "results").glob("*/shapes-vqa/*/run.json")]
    predictions = read_jsonl(run_dir / "predictions.jsonl")
    record = json.loads((run_dir / "run.json").read_text())
    questions = {q["question_id"]: q["question"] for q in json.loads(
        (SHAPES_DIR / "v2_OpenEnded_shapes_test_questions.json").read_text())["questions"]}
    lines = [{"image": p["image"], "question": questions[int(p["id"])]} for p in predictions]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, err = run_cli(["ask", "--questions", str(tmp_path / "q.jsonl"), "-m", "blip2-tiny-t5",
                              "--jsonl", str(tmp_path / "a.jsonl")], capsys)
    assert code == 0, err
    answers = read_jsonl(tmp_path / "a.jsonl")
    assert [a["answer"] for a in answers] == [p["prediction"] for p in predictions]
    assert [a["prompt"] for a in answers] == [p["prompt"] for p in predictions]
    assert {a["protocol_fingerprint"] for a in answers} == {record["protocol_fingerprint"]}
    # the same questions as arguments: every question asked of the one image
    first = [line["question"] for line in lines if line["image"] == lines[0]["image"]]
    code, out, err = run_cli(["ask", lines[0]["image"], *first, "-m", "blip2-tiny-t5", "--jsonl",
                              str(tmp_path / "b.jsonl")], capsys)
    assert code == 0, err
    assert [a["answer"] for a in read_jsonl(tmp_path / "b.jsonl")] == [a["answer"] for a in answers[:len(first)]]
    assert first[0] in out


def test_bad_question_file_line_is_named(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"image": str(SHAPE), "question": "how many shapes are there?"}) + "\n"
                    + '{"image": "x.png", "question": }\n')
    code, _, err = run_cli(["ask", "--questions", str(path), "-m", "blip2-tiny-opt"], capsys)
    assert code == 2 and f"{path} line 2: not valid JSON" in err and err.count("\n") == 1


def test_missing_image_in_question_file(tmp_path, capsys):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"image": "nope.png", "question": "what?"}) + "\n")
    code, _, err = run_cli(["ask", "--questions", str(path), "-m", "blip2-tiny-opt"], capsys)
    assert code == 2 and f"image {tmp_path / 'nope.png'}: file not found" in err


def test_ask_needs_a_question(capsys):
    code, _, err = run_cli(["ask", str(SHAPE), "-m", "blip2-tiny-opt"], capsys)
    assert code == 2 and "at least one question" in err

