"""vqav2 with no --data: the pinned hub dataset, read offline from a hub-cache replica, through snapshot_download."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import pyarrow
import pyarrow.parquet as pq
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


NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def vqa_accuracy_by_hand(prediction: str, answers: list[str]) -> float:
    """The official VQA rule (GT-Vision-Lab vqaEval.py), restated for answers of words and commas: each of the 10
    human answers left out in turn, min(1, matching others / 3), averaged. The answers here disagree, so the
    prediction is normalised: processPunctuation deletes a "," that has a space beside it (else makes it a space),
    processDigitArticle lower-cases, drops articles and writes number words as digits."""
    assert re.fullmatch(r"[a-z0-9 ,]*", prediction), prediction  # other punctuation has more rules than these
    prediction = prediction.replace(",", "" if (", " in prediction or " ," in prediction) else " ")
    words = [NUMBER_WORDS.get(w, w) for w in prediction.split() if w not in ("a", "an", "the")]
    answer = " ".join(words)
    return sum(min(1.0, sum(a == answer for a in answers[:i] + answers[i + 1:]) / 3)
               for i in range(len(answers))) / len(answers)


def test_vqav2_runs_with_only_model_offline(offline, tmp_path, capsys):
    """The bundled trained model (its answers are words, at its own 64 px) on the pinned hub split; the accuracy
    recomputed by the official rule from the parquet's answers, the etags from the files."""
    args = ["run", "vqav2", "-m", "blip2-tiny-opt", "--protocol", "lavis", "--image-size", "64", "--results",
            str(tmp_path), *FAST]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    (run_json,) = tmp_path.glob("*/vqav2/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["data"]["dataset_id"] == HUB.repo_id and record["data"]["resolved_revision"] == HUB.revision
    assert record["runtime"]["images_encoded"] == 2
    # the accuracy recomputed from the predictions and the answers in the parquet files, apart from evalkit
    snapshot = offline / "hub" / f"datasets--{HUB.repo_id.replace('/', '--')}" / "snapshots" / HUB.revision
    table = pyarrow.concat_tables([pq.read_table(f, columns=["question_id", "answers"])
                                   for f in sorted(snapshot.glob("data/validation-*.parquet"))])
    answers = {str(q): [a["answer"] for a in ans] for q, ans in zip(table["question_id"].to_pylist(),
                                                                     table["answers"].to_pylist())}
    lines = [json.loads(l) for l in (run_json.parent / "predictions.jsonl").read_text().splitlines()]
    assert sorted(l["id"] for l in lines) == sorted(answers) and len(lines) == 6
    expected = 100 * sum(vqa_accuracy_by_hand(l["prediction"], answers[l["id"]]) for l in lines) / len(lines)
    assert record["metrics"]["accuracy"]["value"] == pytest.approx(expected, abs=0.005)
    # the tiny model's answers score 0 here, so hand-chosen answers go into the journal and a second run re-scores
    # them (it generates nothing): an answer, "no" (a minority answer: 0.9), with an article, doubled with a comma
    hand = [lambda a: a, lambda a: "no", lambda a: f"the {a}", lambda a: f"{a}, {a}"]
    for n, line in enumerate(lines):
        refs = answers[line["id"]]
        line["prediction"] = hand[n % len(hand)](max(set(refs), key=refs.count))
    (run_json.parent / "predictions.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    rescored = json.loads(run_json.read_text())
    expected = 100 * sum(vqa_accuracy_by_hand(l["prediction"], answers[l["id"]]) for l in lines) / len(lines)
    assert rescored["counts"]["generated_this_invocation"] == 0 and 0 < expected < 100
    assert rescored["metrics"]["accuracy"]["value"] == pytest.approx(expected, abs=0.005)
    # each recorded etag is the sha256 of the file read
    files = record["data"]["files"]
    assert sorted(files) == sorted(str(f.relative_to(snapshot)) for f in snapshot.glob("data/validation-*.parquet"))
    for relative, etag in files.items():
        assert etag == hashlib.sha256((snapshot / relative).read_bytes()).hexdigest(), relative


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
