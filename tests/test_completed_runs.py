"""A completed run is not redone: run.json complete + same journal header + same images -> its recorded result at
once; --rescore scores the journal again without generating; retrieval resumes from its cached score matrices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import evalkit.engine.evaluate as evaluate
from conftest import run_cli
from evalkit.core.run_options import RunOptions
from evalkit.engine.evaluate import run_task


def options(results: Path, task: str, model: str, limit: int, **extra) -> RunOptions:
    return RunOptions(task=task, model=model, results_dir=results, limit=limit, device="cpu", batch_size=8,
                      show_progress=False, **extra)


def forbid(monkeypatch, *names: str) -> None:
    """Make the engine steps ``names`` fail if they are reached."""
    for name in names:
        def refuse(*args, _name=name, **kwargs):
            raise AssertionError(f"{_name} was called")
        monkeypatch.setattr(evaluate, name, refuse)


@pytest.fixture(scope="module")
def vqa_run(tmp_path_factory) -> tuple[Path, dict]:
    results = tmp_path_factory.mktemp("completed") / "results"
    outcome = run_task(options(results, "shapes-vqa", "blip2-tiny-opt", 24))
    assert not outcome.reused and outcome.record["counts"]["generated_this_invocation"] == 24
    return results, outcome.record


def test_a_complete_run_returns_its_recorded_result_without_loading_or_scoring(vqa_run, monkeypatch):
    results, first = vqa_run
    forbid(monkeypatch, "load_checkpoint", "score_and_record")
    again = run_task(options(results, "shapes-vqa", "blip2-tiny-opt", 24))
    assert again.reused and again.record == first


def test_the_cli_says_the_result_is_the_recorded_one(vqa_run, capsys, monkeypatch):
    results, first = vqa_run
    forbid(monkeypatch, "load_checkpoint", "score_and_record")
    code, out, err = run_cli(["run", "shapes-vqa", "--model", "blip2-tiny-opt", "--limit", "24", "--device", "cpu",
                              "--results", str(results), "--json", "-q"], capsys)
    assert code == 0 and json.loads(out) == first
    assert "already complete" in err and "--rescore" in err


def test_rescore_scores_the_journal_again_without_generating(vqa_run, monkeypatch):
    results, first = vqa_run
    forbid(monkeypatch, "load_checkpoint")
    rescored = run_task(options(results, "shapes-vqa", "blip2-tiny-opt", 24, rescore=True))
    assert not rescored.reused
    assert rescored.record["counts"]["generated_this_invocation"] == 0
    assert rescored.record["counts"]["resumed_from_journal"] == 24
    assert rescored.record["metrics"] == first["metrics"]
    # a scoring choice is part of what "unchanged" means: another VQA metric scores again, without generating
    lavis = run_task(options(results, "shapes-vqa", "blip2-tiny-opt", 24, vqa_metric="lavis"))
    assert not lavis.reused and lavis.record["details"]["vqa_metric"] == "lavis"
    official = run_task(options(results, "shapes-vqa", "blip2-tiny-opt", 24))
    assert not official.reused and official.record["details"]["vqa_metric"] == "official"


def test_an_incomplete_journal_is_resumed_not_reused(tmp_path):
    results = tmp_path / "results"
    first = run_task(options(results, "shapes-vqa", "blip2-tiny-opt", 16))
    journal = first.run_dir / "predictions.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-1]))  # the last answer lost (e.g. a crash before run.json was rewritten)
    again = run_task(options(results, "shapes-vqa", "blip2-tiny-opt", 16))
    assert not again.reused
    assert again.record["counts"]["generated_this_invocation"] == 1
    assert again.record["metrics"] == first.record["metrics"]


def test_retrieval_resumes_from_its_cached_scores_without_the_model(tmp_path, monkeypatch):
    results = tmp_path / "results"
    first = run_task(options(results, "shapes-retrieval", "blip2-tiny-itm", 30))
    assert not first.reused and (first.run_dir / "retrieval_scores.pt").is_file()
    metrics = first.record["metrics"]
    import torch

    cached = torch.load(first.run_dir / "retrieval_scores.pt")
    assert cached["i2t"].shape == (30, 150) and cached["i2t"].std() > 0  # a real ranking, not a constant
    forbid(monkeypatch, "load_checkpoint")
    assert run_task(options(results, "shapes-retrieval", "blip2-tiny-itm", 30)).reused
    rescored = run_task(options(results, "shapes-retrieval", "blip2-tiny-itm", 30, rescore=True))
    assert not rescored.reused and rescored.record["metrics"] == metrics
    # a crash after the ranking, before the journal and run.json: the cached scores resume it
    (first.run_dir / "run.json").unlink()
    (first.run_dir / "predictions.jsonl").write_text("")
    resumed = run_task(options(results, "shapes-retrieval", "blip2-tiny-itm", 30))
    assert not resumed.reused and resumed.record["metrics"] == metrics
    predictions = [json.loads(line) for line in (first.run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 30


def test_retrieval_cache_refuses_a_changed_image(tmp_path):
    import torch

    from evalkit.core.errors import EvalkitError
    from evalkit.inference.retrieval_runner import SCORES_CACHE_FILE, cached_scores

    image = tmp_path / "a.png"
    image.write_bytes(b"first bytes")
    from evalkit.data.images import image_record

    sample = type("S", (), {"image": str(image)})()
    torch.save({"i2t": torch.zeros(1, 1), "t2i": torch.zeros(1, 1), "images": [image_record(str(image))],
                "texts": evaluate.sha256_of(["a caption"]), "k": 0}, tmp_path / SCORES_CACHE_FILE)
    assert cached_scores(tmp_path, [sample], ["a caption"]) is not None
    assert cached_scores(tmp_path, [sample], ["another caption"]) is None  # other texts: computed again
    image.write_bytes(b"other bytes!")
    with pytest.raises(EvalkitError, match="a.png changed"):
        cached_scores(tmp_path, [sample], ["a caption"])
