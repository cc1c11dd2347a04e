"""vqav2 with no --data: the pinned hub dataset, read offline from a hub-cache replica, through snapshot_download."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from evalkit.core.errors import EvalkitError
from evalkit.data.data_arg import parse_data_arg
from evalkit.data.hub_datasets import HubImageSource, parse_hub_source
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.tasks.vqav2 import HUB

sys.path.insert(0, str(FIXTURES / "hub_cache"))
from replica import write_vqav2  # noqa: E402

FAST = ["--num-beams", "2", "--max-new-tokens", "4", "-q"]


@pytest.fixture(scope="session")
def hub_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    write_vqav2(home, HUB.repo_id, HUB.revision)
    return home


@pytest.fixture
def offline(hub_home, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(hub_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub_home


def test_pinned_source_parses_and_round_trips():
    source = parse_hub_source("org/name@abc123?val=data/validation-*.parquet&testdev.images=x/*.parquet")
    assert source.repo_id == "org/name" and source.revision == "abc123"
    assert source.patterns("testdev", "images") == ["x/*.parquet"]
    assert parse_data_arg(source.to_arg()).hub == source
    assert len(HUB.revision) == 40 and all(c in "0123456789abcdef" for c in HUB.revision)
    with pytest.raises(EvalkitError, match="no files for split 'train'"):
        HUB.patterns("train")
    with pytest.raises(EvalkitError, match="ORG/NAME@REVISION"):
        parse_hub_source("name-without-org@abc")


def test_offline_load_records_revision_and_etags_and_shares_images(offline):
    sample_set = load_vqa_set(parse_data_arg(HUB.to_arg()), "val")
    identity = sample_set.identity
    assert identity["dataset_id"] == "lmms-lab-encoder/VQAv2" and identity["resolved_revision"] == HUB.revision
    assert identity["config"] == "default" and identity["hub_split"] == "validation" and identity["split"] == "val"
    assert sorted(identity["files"]) == ["data/validation-00000-of-00002.parquet",
                                         "data/validation-00001-of-00002.parquet"]
    assert all(len(etag) == 64 for etag in identity["files"].values())
    assert identity["n_total"] == 6 and identity["n_images"] == 2
    samples = sample_set.samples
    assert len({s.image for s in samples}) == 2  # one key per image_id, across the two files
    assert samples[0].references[:7] == ("yes",) * 7 and dict(samples[0].meta)["answer_type"] == "yes/no"
    source = sample_set.images
    assert isinstance(source, HubImageSource)
    first = source.open(samples[0].image)
    assert first.mode == "RGB" and source.open(samples[1].image) is first  # decoded once per image


def test_vqav2_runs_with_only_model_offline(offline, tiny_opt, tmp_path, capsys):
    code, out, err = run_cli(["run", "vqav2", "-m", str(tiny_opt), "--results", str(tmp_path), *FAST], capsys)
    assert code == 0, err
    (run_json,) = tmp_path.glob("*/vqav2/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["data"]["dataset_id"] == HUB.repo_id and record["data"]["resolved_revision"] == HUB.revision
    assert record["runtime"]["images_encoded"] == 2
    assert "accuracy" in json.dumps(record["metrics"]).lower()


def test_not_in_cache_is_one_line_exit_2(tmp_path, monkeypatch, tiny_opt, capsys):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = run_cli(["run", "vqav2", "-m", str(tiny_opt), "--results", str(tmp_path / "r"), "-q"], capsys)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    for needle in (HUB.repo_id, HUB.revision, "--data", "hf download --repo-type dataset",
                   "HF_HUB_OFFLINE=1"):
        assert needle in err


def test_unreachable_hub_falls_back_to_the_cache_quickly(hub_home, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setenv("HF_HOME", str(hub_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    started = time.perf_counter()
    sample_set = load_vqa_set(parse_data_arg(HUB.to_arg()), "val")
    assert sample_set.identity["resolved_revision"] == HUB.revision and time.perf_counter() - started < 10


def test_progress_while_preparing_and_quiet_silences_it(offline, tiny_opt, tmp_path, capsys, monkeypatch):
    import evalkit.data.hub_datasets as hub_datasets

    shown = []
    real = hub_datasets.progress_bar

    def recording(description, total, completed=0, enabled=True):
        shown.append((description, total, enabled))
        return real(description, total, completed, enabled=False)

    monkeypatch.setattr(hub_datasets, "progress_bar", recording)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # as on a terminal: progress on unless --quiet
    common = ["run", "vqav2", "-m", str(tiny_opt), "--num-beams", "1", "--max-new-tokens", "2", "--limit", "2"]
    code, _, err = run_cli([*common, "--results", str(tmp_path / "a")], capsys)
    assert code == 0, err
    # a "verifying" bar too when the blobs were not verified yet in this session (evalkit.data.hub_snapshot)
    assert [s for s in shown if s[0].startswith("preparing")] == [(f"preparing {HUB.repo_id} val", 6, True)]
    assert all(enabled for _, _, enabled in shown)
    first = len(shown)
    code, _, err = run_cli([*common, "--results", str(tmp_path / "b"), "-q"], capsys)
    assert code == 0, err
    assert shown[first:] == [(f"preparing {HUB.repo_id} val", 6, False)]
