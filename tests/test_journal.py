"""The journal: append per batch, resume after a crash, refuse to mix different runs."""

from __future__ import annotations

import json

import pytest

from evalkit.core.errors import EvalkitError
from evalkit.core.atomic_files import write_json_atomic
from evalkit.engine.journal import PredictionJournal
from evalkit.core.samples import Prediction

HEADER = {"task": "t", "protocol_fingerprint": "abc", "model": "m"}


def test_append_and_reopen_returns_everything(tmp_path):
    journal = PredictionJournal(tmp_path / "run")
    assert journal.open(HEADER) == {}
    journal.append([Prediction("1", "p", "a"), Prediction("2", "p", "b")])
    journal.append([Prediction("3", "p", "c", ("r",))])
    done = PredictionJournal(tmp_path / "run").open(HEADER)
    assert {k: v.prediction for k, v in done.items()} == {"1": "a", "2": "b", "3": "c"}
    assert done["3"].references == ("r",)


def test_torn_last_line_is_dropped_and_cut_from_the_file(tmp_path):
    journal = PredictionJournal(tmp_path / "run")
    journal.open(HEADER)
    journal.append([Prediction("1", "p", "a")])
    with open(journal.predictions_path, "a") as handle:  # what kill -9 in the middle of a write leaves
        handle.write('{"id": "2", "prompt": "p", "predi')
    done = journal.open(HEADER)
    assert list(done) == ["1"]
    journal.append([Prediction("2", "p", "b")])
    lines = journal.predictions_path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["1", "2"]


def test_different_protocol_refuses_to_mix(tmp_path):
    journal = PredictionJournal(tmp_path / "run")
    journal.open(HEADER)
    journal.append([Prediction("1", "p", "a")])
    with pytest.raises(EvalkitError, match="protocol_fingerprint"):
        journal.open({**HEADER, "protocol_fingerprint": "xyz"})
    assert journal.open({**HEADER, "protocol_fingerprint": "xyz"}, overwrite=True) == {}
    assert journal.completed() == {}


def test_atomic_write_leaves_no_temp_file(tmp_path):
    write_json_atomic(tmp_path / "run.json", {"a": 1})
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_rank_killed_before_its_first_answer_leaves_only_a_ledger_that_a_one_process_rerun_folds(tmp_path):
    """CI caught this race: rank 0 of a killed launch had written ``images.rank0-of-2.jsonl`` but no answer yet;
    the one-process rerun folded only ``predictions.rank*`` files and left that ledger behind."""
    from types import SimpleNamespace

    from evalkit.engine.distributed import fold_leftover_journals

    journal = PredictionJournal(tmp_path / "run")
    journal.open(HEADER)
    rank0 = PredictionJournal(tmp_path / "run", suffix=".rank0-of-2")
    entry = {"image": "a.png", "sha256": "0" * 64, "size": 3, "mtime_ns": 1}
    rank0.merge_images([entry])  # its ledger line, and no predictions file at all
    rank1 = PredictionJournal(tmp_path / "run", suffix=".rank1-of-2")
    rank1.append([Prediction("2", "p", "b", image="b.png")])
    samples = [SimpleNamespace(id="1", image="a.png"), SimpleNamespace(id="2", image="b.png")]
    merged = fold_leftover_journals(journal, samples, world=1, done={})
    assert {k: v.prediction for k, v in merged.items()} == {"2": "b"}
    assert not list((tmp_path / "run").glob("*.rank*"))
    assert PredictionJournal(tmp_path / "run").images()["a.png"] == entry
