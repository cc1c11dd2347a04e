"""A run folder never mixes inputs: its images are part of its identity, one process works in it at a time,
and a failed sample is answered again once its image is fixed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import run_cli
from evalkit.demo.bundled import SHAPES_DIR
from evalkit.engine.journal import PredictionJournal

RUN = ["run", "shapes-vqa", "-m", "blip2-tiny-opt", "--limit", "40", "-q"]
PATTERN = ["--column", "image_pattern=images/shapes_test_{image_id:06d}.png"]
IMAGE_3 = "shapes_test_000003.png"  # shown in the first 40 questions (images 1..11)


def _record(results: Path) -> tuple[dict, Path]:
    (run_json,) = results.glob("*/shapes-vqa/*/run.json")
    return json.loads(run_json.read_text()), run_json.parent


def _answers(run_dir: Path) -> dict[str, tuple[str, str]]:
    lines = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return {line["id"]: (line["prediction"], line["status"]) for line in lines}  # a later line wins


def _image_root(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    shutil.copytree(SHAPES_DIR / "images", root / "images")
    return root


def test_changed_images_are_refused_by_name_and_unchanged_ones_resume(tmp_path, capsys):
    first, same, changed = (_image_root(tmp_path, n) for n in ("first", "same", "changed"))
    shutil.copy(changed / "images" / "shapes_test_000004.png", changed / "images" / IMAGE_3)
    base = RUN + ["--results", str(tmp_path / "r"), *PATTERN, "--images"]
    code, _, err = run_cli(base + [str(first)], capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path / "r")
    assert record["data"]["images"]["count"] == 11 and len(record["data"]["images"]["sha256"]) == 64

    # the same bytes in another folder, or touched: the complete run is not redone (its recorded result), and
    # --rescore resumes every prediction, nothing generated again
    os.utime(first / "images" / IMAGE_3, ns=(1, 1))
    for root in (same, first):
        code, _, err = run_cli(base + [str(root)], capsys)
        assert code == 0 and "already complete" in err, err
        code, _, err = run_cli(base + [str(root), "--rescore"], capsys)
        assert code == 0, err
        again, _ = _record(tmp_path / "r")
        assert again["counts"]["generated_this_invocation"] == 0 and again["metrics"] == record["metrics"]
        assert again["data"]["images"] == record["data"]["images"]

    # another image under the same name: a one-line refusal naming it, the run left as it was
    code, _, err = run_cli(base + [str(changed)], capsys)
    assert code == 2 and IMAGE_3 in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    assert _record(tmp_path / "r")[0]["metrics"] == record["metrics"]
    (first / "images" / IMAGE_3).write_bytes((changed / "images" / IMAGE_3).read_bytes())  # edited in place
    code, _, err = run_cli(base + [str(first)], capsys)
    assert code == 2 and IMAGE_3 in err

    code, _, err = run_cli(base + [str(changed), "--overwrite"], capsys)
    assert code == 0, err
    redone, _ = _record(tmp_path / "r")
    assert redone["data"]["images"]["sha256"] != record["data"]["images"]["sha256"]


def test_failed_samples_are_answered_again_once_the_image_is_fixed(tmp_path, capsys):
    clean = RUN + ["--results", str(tmp_path / "clean")]
    assert run_cli(clean, capsys)[0] == 0
    _, clean_dir = _record(tmp_path / "clean")

    data = tmp_path / "data"
    shutil.copytree(SHAPES_DIR, data)
    victim = data / "images" / IMAGE_3
    good = victim.read_bytes()
    victim.write_bytes(b"not a png")
    base = RUN + ["--data", str(data), "--results", str(tmp_path / "r")]
    code, _, err = run_cli(base + ["--skip-bad-images"], capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path / "r")
    assert record["counts"]["failed"] > 0

    victim.write_bytes(good)
    code, _, err = run_cli(base, capsys)
    assert code == 0, err
    fixed, _ = _record(tmp_path / "r")
    assert fixed["counts"]["failed"] == 0
    assert fixed["counts"]["generated_this_invocation"] == record["counts"]["failed"]
    assert not any("failed" in reason for reason in fixed["not_reportable_reasons"])
    assert _answers(run_dir) == _answers(clean_dir)  # the others unchanged, the fixed ones answered
    assert fixed["metrics"] == _record(tmp_path / "clean")[0]["metrics"]
    assert fixed["data"]["images"]["sha256"] == _record(tmp_path / "clean")[0]["data"]["images"]["sha256"]


def _evalkit(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "evalkit", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)


def test_a_held_run_folder_is_refused_or_waited_for(tmp_path):
    results = tmp_path / "r"
    args = [*RUN, "--results", str(results), "--run-id", "shared"]
    run_dir = results / "blip2-tiny-opt" / "shapes-vqa" / "shared"
    with PredictionJournal(run_dir).locked():  # another process holds the folder
        refused = _evalkit(*args)
        _, err = refused.communicate(timeout=300)
        assert refused.returncode == 2 and str(run_dir) in err and "--wait" in err
        assert len(err.strip().splitlines()) == 1
        waiting = _evalkit(*args, "--wait")
        time.sleep(3)
        assert waiting.poll() is None  # still waiting for the lock
        assert not (run_dir / "predictions.jsonl").exists()
    _, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == 40


def test_two_runs_started_together_do_the_work_once(tmp_path):
    results = tmp_path / "r"
    args = [*RUN, "--results", str(results)]
    first, second = _evalkit(*args), _evalkit(*args)
    outcomes = [(p.wait(timeout=300), p.communicate()[1]) for p in (first, second)]
    assert sorted(code for code, _ in outcomes) in ([0, 0], [0, 2]), outcomes
    for code, err in outcomes:
        assert code == 0 or ("in use by another evalkit run" in err and len(err.strip().splitlines()) == 1)
    (journal,) = results.glob("*/shapes-vqa/*/predictions.jsonl")
    assert len(journal.read_text().splitlines()) == 40

    # with --wait both finish; a different protocol under the same --run-id is refused by name, not a crash
    args = [*RUN, "--results", str(tmp_path / "w"), "--run-id", "one", "--wait"]
    first, second = _evalkit(*args), _evalkit(*args, "--num-beams", "2")
    outcomes = [(p.wait(timeout=300), p.communicate()[1]) for p in (first, second)]
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    err = next(err for code, err in outcomes if code == 2)
    assert "protocol" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    (journal,) = (tmp_path / "w").glob("*/shapes-vqa/one/predictions.jsonl")
    assert len(journal.read_text().splitlines()) == 40


def test_an_exactly_repeated_caption_annotation_is_an_error_and_independent_ones_are_kept(tmp_path):
    import pytest

    from evalkit.core.errors import EvalkitError
    from evalkit.data.coco_caption_files import load_caption_annotations

    annotations = {"images": [{"id": 1}], "annotations": [{"id": 10, "image_id": 1, "caption": "A cat."},
                                                          {"id": 11, "image_id": 1, "caption": "A cat."}]}
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(annotations))
    assert load_caption_annotations(path) == {1: ["A cat.", "A cat."]}  # two annotators, as in COCO's own files
    annotations["annotations"].append({"id": 10, "image_id": 1, "caption": "A cat."})
    path.write_text(json.dumps(annotations))
    with pytest.raises(EvalkitError, match=r"annotations\[2\] repeats annotation 10"):
        load_caption_annotations(path)


def test_image_ledger_is_written_before_the_predictions_and_survives_a_torn_line(tmp_path):
    from evalkit.core.samples import Prediction, Sample

    image = tmp_path / "a.png"
    image.write_bytes(b"one")
    journal = PredictionJournal(tmp_path / "run")
    journal.open({"task": "t"})
    journal.append([Prediction("1", "p", "a", image=str(image)), Prediction("2", "p", "b", image="hf-row:3")])
    with open(journal.images_path, "a") as handle:
        handle.write('{"image": "torn')
    reopened = PredictionJournal(tmp_path / "run")
    assert list(reopened.images()) == [str(image)]  # dataset rows are identified by the data hash instead
    identity = reopened.image_identity([Sample("1", str(image)), Sample("2", "hf-row:3")])
    assert identity["count"] == 1 and identity["not_hashed"] == 1
    image.write_bytes(b"two")
    reopened.append([Prediction("3", "p", "c", image=str(image))])  # appended after the torn line was cut
    assert PredictionJournal(tmp_path / "run").images()[str(image)]["size"] == 3
    assert len(reopened.images_path.read_text().splitlines()) == 2
