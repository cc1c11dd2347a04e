"""Hub dataset images are identified by the bytes read: images.jsonl holds each row's sha256, and a rerun over
a hub cache whose row bytes changed in place (same blob name, same etag) is refused: the blob no longer hashes to
its name (evalkit.data.hub_snapshot.verify_blobs), before the image ledger would have to catch it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from conftest import FIXTURES, run_cli
from evalkit.tasks.vqav2 import HUB

sys.path.insert(0, str(FIXTURES / "hub_cache"))
from replica import image_bytes, parquet_bytes, vqav2_features, vqav2_rows, write_vqav2  # noqa: E402

FIRST_SHARD = "data/validation-00000-of-00002.parquet"


def test_a_row_whose_bytes_changed_in_the_hub_cache_is_refused_on_resume(tiny_opt, tmp_path, monkeypatch, capsys):
    snapshot = write_vqav2(tmp_path / "hf", HUB.repo_id, HUB.revision)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = ["run", "vqav2", "-m", str(tiny_opt), "--results", str(tmp_path / "r"), "--num-beams", "1",
            "--max-new-tokens", "2", "-q"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    (run_json,) = (tmp_path / "r").glob("*/vqav2/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["data"]["images"]["count"] == 2 and record["data"]["images"]["not_hashed"] == 0
    ledger = [json.loads(line) for line in (run_json.parent / "images.jsonl").read_text().splitlines()]
    assert {e["image"].split(":")[0] for e in ledger} == {"hub-row"} and all(len(e["sha256"]) == 64 for e in ledger)

    code, _, err = run_cli(args, capsys)  # unchanged: its recorded result, nothing generated again
    assert code == 0, err
    assert "already complete" in err

    # the first image's rows get another picture, written over the blob in place: the file names and etags
    # the run's header records are unchanged, only the bytes read differ
    rows = vqav2_rows()
    rows["image"] = [{"bytes": image_bytes(5 if i < 3 else i // 3), "path": None} for i in range(6)]
    blob = Path(os.path.realpath(snapshot / FIRST_SHARD))
    blob.write_bytes(parquet_bytes({k: v[:3] for k, v in rows.items()}, vqav2_features()))
    capsys.readouterr()  # the parquet writer's progress bar
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "corrupt" in err and str(snapshot / FIRST_SHARD) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
