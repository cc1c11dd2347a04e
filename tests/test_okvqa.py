"""okvqa with only --model, offline from a hub-cache replica: the VQAv2 protocol, official VQA accuracy."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from evalkit.core.registry import get_task
from evalkit.tasks.okvqa import HUB

sys.path.insert(0, str(FIXTURES / "hub_cache"))
from replica import coco_id, write_okvqa  # noqa: E402

FAST = ["--num-beams", "2", "--max-new-tokens", "4", "-q"]


@pytest.fixture
def offline(tmp_path_factory, monkeypatch) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    write_okvqa(home, HUB.repo_id, HUB.revision)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def test_okvqa_uses_the_vqav2_protocols():
    task, vqav2 = get_task("okvqa"), get_task("vqav2")
    for family in ("opt", "t5"):
        for name in ("paper", "lavis"):
            assert task.protocol_for(family, name) == vqav2.protocol_for(family, name)


def test_okvqa_runs_with_only_model_offline(offline, tiny_t5, tmp_path, capsys):
    code, out, err = run_cli(["run", "okvqa", "-m", str(tiny_t5), "--results", str(tmp_path), *FAST], capsys)
    assert code == 0, err
    (run_json,) = tmp_path.glob("*/okvqa/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["data"]["dataset_id"] == HUB.repo_id and record["data"]["resolved_revision"] == HUB.revision
    assert record["data"]["n_total"] == 3 and record["details"]["vqa_metric"] == "official"
    lines = [json.loads(l) for l in (run_json.parent / "predictions.jsonl").read_text().splitlines()]
    assert sorted(l["id"] for l in lines) == sorted(str(coco_id(i) * 10 + 5) for i in range(3))
    assert record["protocol"]["prompt"] == "Question: {question} Short answer:"
