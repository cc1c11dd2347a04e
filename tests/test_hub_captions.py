"""coco-caption, retrieval-coco and retrieval-flickr30k with no --data, offline, from a hub-cache replica."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.data_arg import parse_data_arg
from evalkit.tasks.coco_caption import COCO_KARPATHY_HUB
from evalkit.tasks.retrieval import FLICKR_1K_HUB

sys.path.insert(0, str(FIXTURES / "hub_cache"))
from replica import coco_id, write_karpathy_retrieval  # noqa: E402

FAST = ["--num-beams", "2", "--max-new-tokens", "4", "-q"]
FLICKR_COMMIT = "0" * 39 + "1"  # the replica's sha for refs/convert/parquet (the real one is to be confirmed)


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    write_karpathy_retrieval(home, COCO_KARPATHY_HUB.repo_id, COCO_KARPATHY_HUB.revision)
    write_karpathy_retrieval(home, FLICKR_1K_HUB.repo_id, FLICKR_COMMIT, coco=False, ref=FLICKR_1K_HUB.revision)
    return home


@pytest.fixture
def offline(hub_home, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(hub_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_home


@pytest.fixture(scope="module")
def tiny_itm(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_itm

    return build_tiny_itm(tmp_path_factory.mktemp("models") / "tiny-itm")


def test_coco_ids_come_from_the_file_names(offline):
    columns = {"image": "image", "captions": "sentences", "id": "cocoid"}  # the task's (Karpathy json) mapping
    sample_set = load_caption_set(parse_data_arg(COCO_KARPATHY_HUB.to_arg()), "test", None, columns)
    assert [s.id for s in sample_set.samples] == [str(coco_id(i)) for i in range(4)]
    assert len(sample_set.samples[0].references) == 5
    assert sample_set.identity["config"] == "TEST" and sample_set.identity["id_column"] == "filename"
    assert sample_set.identity["hub_split"] == "test"  # TEST/test/0000.parquet: the split is the folder
    assert sample_set.images.open(sample_set.samples[0].image).mode == "RGB"


def test_flickr_ref_resolves_to_the_cached_sha(offline):
    sample_set = load_caption_set(parse_data_arg(FLICKR_1K_HUB.to_arg()), "test", None, {"id": "img_id"})
    identity = sample_set.identity
    assert identity["revision"] == "refs/convert/parquet" and identity["resolved_revision"] == FLICKR_COMMIT
    assert sample_set.samples[0].id == str(coco_id(0))


def test_coco_caption_runs_with_only_model_offline(offline, java, tiny_opt, tmp_path, capsys):
    code, out, err = run_cli(["run", "coco-caption", "-m", str(tiny_opt), "--results", str(tmp_path), *FAST], capsys)
    assert code == 0, err
    (run_json,) = tmp_path.glob("*/coco-caption/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["data"]["dataset_id"] == COCO_KARPATHY_HUB.repo_id
    assert record["data"]["resolved_revision"] == COCO_KARPATHY_HUB.revision
    results = json.loads((run_json.parent / record["official_predictions_file"]).read_text())
    assert sorted(r["image_id"] for r in results) == sorted(coco_id(i) for i in range(4))


@pytest.mark.parametrize("task", ["retrieval-coco", "retrieval-flickr30k"])
def test_retrieval_runs_with_only_model_offline(task, offline, tiny_itm, tmp_path, capsys):
    code, out, err = run_cli(["run", task, "-m", str(tiny_itm), "--results", str(tmp_path), "-q"], capsys)
    assert code == 0, err
    (run_json,) = tmp_path.glob(f"*/{task}/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["data"]["format"] == "hf-hub" and record["data"]["n_total"] == 4
