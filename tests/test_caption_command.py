"""`evalkit caption` on your own images: the same captions as `evalkit run shapes-caption`, URLs, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import run_cli
from evalkit.demo.bundled import SHAPES_DIR
from test_api_image_inputs import http_images  # noqa: F401 - the local HTTP server fixture

SHAPE = SHAPES_DIR / "images" / "shapes_test_000001.png"


@pytest.fixture
def unscored_caption_runs(monkeypatch):
    """`evalkit run shapes-caption` without the Java scorers (~30 s on 2 cores). Scoring comes after the
    predictions are journaled and never touches them; these tests compare predictions only."""
    from evalkit.metrics import caption_metrics

    def no_scores(references, predictions, **_):
        per_image = {i: {"CIDEr": 0.0} for i in references}
        return caption_metrics.CaptionScores({"CIDEr": 0.0}, per_image, {}, len(references))

    monkeypatch.setattr(caption_metrics, "score_captions", no_scores)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_predictions(results: Path, extra: list[str], capsys) -> tuple[list[dict], dict]:
    code, _, err = run_cli(["run", "shapes-caption", "--limit", "3", "--results", str(results), "-q", *extra], capsys)
    assert code == 0, err
    (run_dir,) = [p.parent for p in results.glob("*/shapes-caption/*/run.json")]
    return read_jsonl(run_dir / "predictions.jsonl"), json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize("run_flags, caption_flags", [([], ["--prompt", "a photo of"]),
                                                      (["--prompt-variant", "none"], [])])
def test_same_captions_as_evalkit_run(tmp_path, capsys, unscored_caption_runs, run_flags, caption_flags):
    predictions, record = run_predictions(tmp_path / "results", run_flags, capsys)
    images = [p["image"] for p in predictions]
    code, out, err = run_cli(["caption", *images, "-m", "blip2-tiny-opt", "--jsonl", str(tmp_path / "c.jsonl"),
                              *caption_flags], capsys)
    assert code == 0, err
    captions = read_jsonl(tmp_path / "c.jsonl")
    assert [c["image"] for c in captions] == images
    assert [c["caption"] for c in captions] == [p["prediction"] for p in predictions]
    assert [c["prompt"] for c in captions] == [p["prompt"] for p in predictions]
    assert {c["model"] for c in captions} == {"blip2-tiny-opt"}
    if run_flags:  # the unprompted caption is the task's "none" prompt variant: the very same protocol
        assert {c["protocol_fingerprint"] for c in captions} == {record["protocol_fingerprint"]}
    assert "blip2-tiny-opt" in out and Path(images[0]).name[:12] in out


def test_folder_url_and_notice(tmp_path, capsys, http_images):  # noqa: F811 - the fixture
    shutil.copy(SHAPE, tmp_path / "shape.png")
    (tmp_path / "readme.txt").write_text("not an image")
    url = f"{http_images}/shape.png"
    code, out, err = run_cli(["caption", str(tmp_path), url, "-m", "blip2-tiny-t5", "--num-beams", "2",
                              "--jsonl", str(tmp_path / "c.jsonl")], capsys)
    assert code == 0, err
    assert f"skipped {tmp_path / 'readme.txt'}: not an image file" in err
    file_caption, url_caption = read_jsonl(tmp_path / "c.jsonl")
    assert url_caption["image"] == url and url_caption["caption"] == file_caption["caption"] != ""


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", "file not found"),
    (lambda d: (d / "bad.png").write_text("text") and d / "bad.png", "cannot decode"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "holds no image files"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    code, out, err = run_cli(["caption", str(make(tmp_path)), "-m", "blip2-tiny-opt"], capsys)
    assert code == 2 and message in err
    assert err.count("\n") == 1 and err.startswith("error:") and "Traceback" not in err


def test_truncated_image_fails_or_is_skipped(tmp_path, capsys):
    (tmp_path / "cut.png").write_bytes(SHAPE.read_bytes()[:200])  # a valid header, then nothing
    shutil.copy(SHAPE, tmp_path / "ok.png")
    args = ["caption", str(tmp_path / "cut.png"), str(tmp_path / "ok.png"), "-m", "blip2-tiny-opt"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "cut.png: cannot decode" in err and err.count("\n") == 1
    code, out, err = run_cli(args + ["--skip-bad-images", "--jsonl", str(tmp_path / "c.jsonl")], capsys)
    assert code == 0, err
    bad, good = read_jsonl(tmp_path / "c.jsonl")
    assert bad["status"] == "failed" and "cannot decode" in bad["error"] and good["status"] == "ok"


def test_retrieval_model_and_bad_flags_are_refused(capsys):
    code, _, err = run_cli(["caption", str(SHAPE), "-m", "blip2-tiny-itm"], capsys)
    assert code == 2 and "retrieval" in err
    code, _, err = run_cli(["caption", str(SHAPE), "-m", "blip2-tiny-opt", "--num-beams", "0"], capsys)
    assert code == 2 and "--num-beams must be positive" in err


def test_too_long_prompt_is_refused_not_crashed(capsys):
    """The tiny OPT has 64 learned positions: a prompt past them would fail inside the model."""
    code, _, err = run_cli(["caption", str(SHAPE), "--prompt", "a photo of " * 20, "-m", "blip2-tiny-opt"], capsys)
    assert code == 2 and "prompt too long" in err and "64 positions" in err and err.count("\n") == 1
