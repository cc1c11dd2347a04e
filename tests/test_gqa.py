"""gqa: LAVIS's normalised exact match, and a run with only --model, offline from a hub-cache replica."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from evalkit.core.sample_set import file_sha256
from evalkit.data.data_arg import parse_data_arg
from evalkit.data.gqa_datasets import load_gqa_set
from evalkit.kinds.normalized_exact_match import exact_match, lavis_normalised
from evalkit.tasks.gqa import HUB

sys.path.insert(0, str(FIXTURES / "hub_cache"))
from replica import write_gqa  # noqa: E402

FAST = ["--num-beams", "2", "--max-new-tokens", "4", "-q"]


@pytest.mark.parametrize("prediction, answer, expected", [
    ("The car.", "car", 100.0),  # article and trailing period go (processPunctuation + processDigitArticle)
    ("Left", "left", 100.0),  # lower-cased
    ("two", "2", 100.0),  # number words become digits in the prediction
    ("two", "two", 0.0),  # ... and the stored answer is not normalised (LAVIS GQATask)
    ("t-shirt", "t-shirt", 0.0),  # "-" without surrounding spaces becomes a space: "t shirt"
    ("yes", "no", 0.0),
])
def test_exact_match_follows_lavis_gqa_task(prediction, answer, expected):
    assert exact_match(prediction, answer) == expected


def test_normalisation_examples():
    assert lavis_normalised("  A  red, shiny car!  ") == "red shiny car"


@pytest.fixture
def offline(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    write_gqa(home, HUB.repo_id, HUB.revision)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_questions_join_images_on_image_id(offline):
    sample_set = load_gqa_set(parse_data_arg(HUB.to_arg()), "testdev")
    samples = sample_set.samples
    assert [s.id for s in samples] == ["201307251", "201640614", "20968379"]
    assert samples[0].image == samples[1].image != samples[2].image and samples[0].references == ("yes",)
    identity = sample_set.identity
    assert identity["config"] == "testdev_balanced_instructions" and identity["hub_split"] == "testdev"
    assert identity["image_files"]["config"] == "testdev_balanced_images" and identity["n_images"] == 2
    assert sample_set.images.open(samples[2].image).mode == "RGB"


def test_gqa_runs_with_only_model_offline(offline, tiny_t5, tmp_path, capsys):
    code, out, err = run_cli(["run", "gqa", "-m", str(tiny_t5), "--results", str(tmp_path), *FAST, "--json"], capsys)
    assert code == 0, err
    (run_json,) = tmp_path.glob("*/gqa/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["task"]["kind"] == "normalized-exact-match" and record["data"]["resolved_revision"] == HUB.revision
    # run.json keeps the images config's files and etags beside the ledger digest of the images used
    images_config = record["data"]["image_files"]
    snapshot = offline / "hub" / "datasets--lmms-lab-encoder--GQA" / "snapshots" / HUB.revision
    image_file = "testdev_balanced_images/testdev-00000-of-00001.parquet"
    assert images_config["config"] == "testdev_balanced_images" and images_config["resolved_revision"] == HUB.revision
    assert images_config["files"] == {image_file: file_sha256(snapshot / image_file)}
    assert record["data"]["images"]["count"] == 2 and record["data"]["images"]["not_hashed"] == 0
    lines = [json.loads(l) for l in (run_json.parent / "predictions.jsonl").read_text().splitlines()]
    expected = 100.0 * sum(lavis_normalised(l["prediction"]) == l["references"][0] for l in lines) / len(lines)
    assert record["metrics"]["accuracy"]["value"] == pytest.approx(expected)
    official = json.loads((run_json.parent / record["official_predictions_file"]).read_text())
    assert {"questionId", "prediction"} <= set(official[0])
