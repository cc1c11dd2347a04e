"""nocaps with only --model, offline from a hub-cache replica; per-domain CIDEr from the official annotation file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from evalkit.tasks.nocaps import HUB

sys.path.insert(0, str(FIXTURES / "hub_cache"))
from replica import write_nocaps  # noqa: E402

FAST = ["--num-beams", "2", "--max-new-tokens", "6", "-q"]


@pytest.fixture
def offline(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    write_nocaps(home, HUB.repo_id, HUB.revision)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def _record(results: Path) -> tuple[dict, Path]:
    (run_json,) = results.glob("*/nocaps/*/run.json")
    return json.loads(run_json.read_text()), run_json.parent


def test_nocaps_runs_with_only_model_offline(offline, java, tiny_opt, tmp_path, capsys):
    code, out, err = run_cli(["run", "nocaps", "-m", str(tiny_opt), "--results", str(tmp_path), *FAST], capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path)
    assert record["data"]["dataset_id"] == HUB.repo_id and record["data"]["hub_split"] == "validation"
    assert "CIDEr" in record["metrics"] and not any("/" in m for m in record["metrics"])
    assert "not labelled" in record["details"]["domains"]
    results = json.loads((run_dir / record["official_predictions_file"]).read_text())
    assert sorted(r["image_id"] for r in results) == [0, 1, 2]


def test_domains_from_the_annotation_file(offline, java, tiny_opt, tmp_path, capsys):
    domains = ["in-domain", "near-domain", "near-domain"]
    annotation = tmp_path / "nocaps_val_4500_captions.json"
    annotation.write_text(json.dumps({"images": [{"id": i, "file_name": f"{i:016x}.jpg", "open_images_id": f"{i:016x}",
                                                  "domain": d} for i, d in enumerate(domains)], "annotations": []}))
    code, out, err = run_cli(["run", "nocaps", "-m", str(tiny_opt), "--results", str(tmp_path / "r"),
                              "--column", f"domain_file={annotation}", *FAST], capsys)
    assert code == 0, err
    record, _ = _record(tmp_path / "r")
    assert {"CIDEr/in-domain", "CIDEr/near-domain"} <= set(record["metrics"])
    assert record["details"]["domains"] == {"in-domain": 1, "near-domain": 2}
    assert record["data"]["domain_file_sha256"]
