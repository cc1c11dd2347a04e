"""`evalkit run coco-caption` end to end with a tiny model: record, resume after kill -9, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_cli, write_karpathy

FAST = ["--num-beams", "2", "--max-new-tokens", "5", "--min-new-tokens", "1", "-q"]


def _run_dir(results: Path) -> Path:
    (run_json,) = results.glob("*/*/*/run.json")
    return run_json.parent


def _predictions(run_dir: Path) -> dict[str, str]:
    lines = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == len({line["id"] for line in lines}), "duplicate predictions in the journal"
    return {line["id"]: line["prediction"] for line in lines}


def official_caption_scores(dataset_json: Path, results_json: Path) -> dict[str, float]:
    """Corpus BLEU-1..4, METEOR, ROUGE-L, CIDEr (0-100) of an official captions_results.json against the
    test-split references of a Karpathy file, with pycocoevalcap's own tokenizer and scorers."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    images = json.loads(dataset_json.read_text())["images"]
    results = json.loads(results_json.read_text())
    gts = {im["cocoid"]: [{"caption": s["raw"]} for s in im["sentences"]] for im in images if im["split"] == "test"}
    res = {row["image_id"]: [{"caption": row["caption"]}] for row in results}
    assert set(res) == set(gts) and len(res) == len(results)
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{k + 1}": 100 * bleu[k] for k in range(4)}
    scores["METEOR"] = 100 * Meteor().compute_score(gts, res)[0]  # the JVM ends with the object
    scores["ROUGE-L"] = 100 * Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = 100 * Cider().compute_score(gts, res)[0]
    return scores


def test_run_writes_a_complete_record(tiny_opt, karpathy_dir, tmp_path, capsys):
    results = tmp_path / "results"
    code, out, err = run_cli(["run", "coco-caption", "-m", str(tiny_opt), "--data", str(karpathy_dir),
                              "--results", str(results), *FAST], capsys)
    assert code == 0, err
    run_dir = _run_dir(results)
    record = json.loads((run_dir / "run.json").read_text())
    assert record["task"]["name"] == "coco-caption" and record["model"]["family"] == "opt"
    assert record["protocol"]["prompt"] == "a photo of" and record["protocol"]["num_beams"] == 2
    assert record["overrides"] == {"num_beams": 2, "max_new_tokens": 5, "min_new_tokens": 1}
    assert len(record["protocol_fingerprint"]) == 64 and len(record["model"]["weights_sha256"]) == 64
    # the recorded values are what pycocoevalcap gives on the run's own official file
    official = official_caption_scores(karpathy_dir / "dataset_coco.json", run_dir / "captions_results.json")
    assert {name: entry["value"] for name, entry in record["metrics"].items()} == pytest.approx(official, rel=1e-9,
                                                                                               abs=1e-9)
    assert record["counts"]["samples"] == 6 and record["counts"]["failed"] == 0
    assert record["data"]["n_samples"] == 6 and record["data"]["format"] == "karpathy"
    assert record["reportable"] is False and "5000" in record["not_reportable_reasons"][0]
    assert record["provenance"]["packages"]["transformers"]
    assert record["runtime"]["dtype"] == "float32" and record["runtime"]["generation_samples_per_second"] > 0
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and all(p["prompt"] == "a photo of" and len(p["references"]) == 5
                                         for p in predictions)
    official = json.loads((run_dir / "captions_results.json").read_text())
    assert {row["image_id"] for row in official} == {int(p["id"]) for p in predictions}
    assert "CIDEr" in out and "run.json" in out
    # the same command again returns the recorded result: nothing generated or scored, run.json untouched
    first_bytes = (run_dir / "run.json").read_bytes()
    code, _, err = run_cli(["run", "coco-caption", "-m", str(tiny_opt), "--data", str(karpathy_dir),
                            "--results", str(results), *FAST], capsys)
    assert code == 0 and "already complete" in err and (run_dir / "run.json").read_bytes() == first_bytes
    # --rescore scores the journal again without generating
    code, _, err = run_cli(["run", "coco-caption", "-m", str(tiny_opt), "--data", str(karpathy_dir),
                            "--results", str(results), "--rescore", *FAST], capsys)
    again = json.loads((run_dir / "run.json").read_text())
    assert code == 0 and again["counts"]["generated_this_invocation"] == 0, err
    assert again["metrics"] == record["metrics"]


def test_resume_after_kill_9_gives_the_uninterrupted_result(tiny_opt, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_karpathy(data, repeat=4)  # 30 test images
    command = [sys.executable, "-m", "evalkit.cli.main", "run", "coco-caption", "-m", str(tiny_opt), "--data", str(data),
               *FAST]
    crashed = tmp_path / "crashed"
    process = subprocess.Popen(command + ["--results", str(crashed), "--batch-size", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    journal = None
    while time.time() < deadline:
        found = list(crashed.glob("*/*/*/predictions.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= 3:
            journal = found[0]
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert journal is not None, "the run never wrote predictions"
    written = len(journal.read_text().splitlines())
    assert 3 <= written < 30 and not (journal.parent / "run.json").exists()
    resumed = subprocess.run(command + ["--results", str(crashed), "--batch-size", "4"], capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(command + ["--results", str(tmp_path / "straight"), "--batch-size", "3"],
                              capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    crashed_dir, straight_dir = _run_dir(crashed), _run_dir(tmp_path / "straight")
    assert _predictions(crashed_dir) == _predictions(straight_dir)
    first, second = (json.loads((d / "run.json").read_text()) for d in (crashed_dir, straight_dir))
    assert first["metrics"] == second["metrics"]
    assert first["counts"]["resumed_from_journal"] >= written - 1


def test_changed_protocol_refuses_the_old_journal(tiny_opt, karpathy_dir, tmp_path, capsys):
    base = ["run", "coco-caption", "-m", str(tiny_opt), "--data", str(karpathy_dir), "--results",
            str(tmp_path / "r"), "--run-id", "mine", *FAST]
    assert run_cli(base, capsys)[0] == 0
    code, _, err = run_cli(base + ["--num-beams", "1"], capsys)
    assert code == 2 and "different protocol_fingerprint" in err and "--overwrite" in err
    assert run_cli(base + ["--num-beams", "1", "--overwrite"], capsys)[0] == 0


@pytest.mark.parametrize("args, message", [
    (["run", "coco-caption", "-m", "blip2-opt-2.7", "--data", "."], "did you mean: blip2-opt-2.7b"),
    (["run", "coco-captoin", "-m", "blip2-opt-2.7b"], "did you mean: coco-caption"),
    (["run", "coco-caption", "-m", "blip2-tiny-opt", "--data", "/no/such/folder"], "/no/such/folder does not exist"),
    (["run", "coco-caption", "-m", "./no-such-model-dir", "--data", "."], "does not exist"),
])
def test_bad_arguments_give_one_line_errors(args, message, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 2 and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_default_hub_data_not_cached_offline_is_one_line(tmp_path, monkeypatch, capsys):
    """coco-caption's default data is a pinned hub dataset: with no cache and no hub, one line names it."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(["run", "coco-caption", "-m", "blip2-tiny-opt", "--results", str(tmp_path / "r")], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "nlphuji/mscoco_2014_5k_test_image_text_retrieval" in err and "--data" in err


def test_missing_and_corrupt_images(tiny_opt, karpathy_dir, tmp_path, capsys):
    entries = json.loads((karpathy_dir / "dataset_coco.json").read_text())["images"]
    images = [karpathy_dir / "val2017" / e["filename"] for e in entries if e["split"] == "test"]
    images[0].unlink()
    images[1].write_bytes(b"not a jpeg at all")
    base = ["run", "coco-caption", "-m", str(tiny_opt), "--data", str(karpathy_dir), "--results",
            str(tmp_path / "r"), *FAST]
    code, _, err = run_cli(base, capsys)
    assert code == 2 and images[0].name in err and "not found" in err and "Traceback" not in err
    code, out, err = run_cli(base + ["--skip-bad-images"], capsys)
    assert code == 0, err
    record = json.loads((_run_dir(tmp_path / "r") / "run.json").read_text())
    assert record["counts"]["failed"] == 2 and record["reportable"] is False
    failed = [json.loads(l) for l in (_run_dir(tmp_path / "r") / "predictions.jsonl").read_text().splitlines()
              if json.loads(l)["status"] == "failed"]
    assert {Path(f["image"]).name for f in failed} == {images[0].name, images[1].name}
    assert any("cannot decode" in f["error"] for f in failed) and any("not found" in f["error"] for f in failed)


def test_a_corrupt_image_without_skip_names_the_file(tiny_opt, karpathy_dir, tmp_path, capsys):
    entries = json.loads((karpathy_dir / "dataset_coco.json").read_text())["images"]
    victim = karpathy_dir / "val2017" / next(e["filename"] for e in entries if e["split"] == "test")
    Image.new("RGB", (4, 4)).save(victim, format="PNG")
    victim.write_bytes(victim.read_bytes()[:20])  # truncated
    code, _, err = run_cli(["run", "coco-caption", "-m", str(tiny_opt), "--data", str(karpathy_dir),
                            "--results", str(tmp_path / "r"), *FAST], capsys)
    assert code == 2 and victim.name in err and "--skip-bad-images" in err


def test_report_from_another_folder_finds_relative_images_or_says_so(tiny_opt, tmp_path, monkeypatch, capsys):
    """Image paths are recorded as given (here relative); the report finds them from any working directory through
    the run's recorded working directory, and warns by name when they cannot be found."""
    from conftest import write_karpathy

    made_in = tmp_path / "made-in"
    write_karpathy(made_in / "coco")
    monkeypatch.chdir(made_in)
    code, _, err = run_cli(["run", "coco-caption", "-m", str(tiny_opt), "--data", "coco", "--results",
                            str(tmp_path / "r"), *FAST], capsys)
    assert code == 0, err
    run_dir = _run_dir(tmp_path / "r")
    first = json.loads((run_dir / "predictions.jsonl").read_text().splitlines()[0])
    assert not Path(first["image"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = run_cli(["report", str(tmp_path / "r"), "--no-write"], capsys)
    html = (tmp_path / "r" / "report.html").read_text()
    assert code == 0 and "sample images not found" not in err and html.count('src="data:image/jpeg') >= 1
    record = json.loads((run_dir / "run.json").read_text())
    del record["provenance"]["working_directory"]
    (run_dir / "run.json").write_text(json.dumps(record))
    code, _, err = run_cli(["report", str(tmp_path / "r"), "--no-write"], capsys)
    html = (tmp_path / "r" / "report.html").read_text()
    assert code == 0 and "sample images not found (first: coco/val2017/" in err
    assert 'class="warn"' in html and 'src="data:image/jpeg' not in html
