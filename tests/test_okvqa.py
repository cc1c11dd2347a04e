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


def test_okvqa_protocols_are_the_lavis_config_literals():
    """lavis/projects/blip2/eval/okvqa_zeroshot_flant5xl_eval.yaml (salesforce-lavis 1.0.2 wheel): blip_image_eval
    image_size 224, blip_question, max_len 10, min_len 1, num_beams 5, prompt "Question: {} Short answer:";
    Flan-T5 length penalty -1 is blip2_t5.py predict_answers' default (length_penalty=-1). OPT: LAVIS runs OK-VQA
    only with Flan-T5; evalkit gives OPT the VQAv2 OPT settings (salesforce/LAVIS @8491f1d
    vqav2_zeroshot_opt_eval.yaml, blip2_opt.py predict_answers: length_penalty=0, prompt cut to 32 tokens, answers
    end at the newline), and the paper's "Question: {} Answer:" with length penalty -1 by default."""
    names = ("name", "prompt", "question_preprocess", "image_size", "num_beams", "max_new_tokens", "min_length",
             "min_new_tokens", "length_penalty", "max_prompt_tokens", "stop_at_newline")
    short, answer = "Question: {question} Short answer:", "Question: {question} Answer:"
    expected = {
        ("t5", "paper"): ("paper", short, "lavis-blip-question", 224, 5, 10, 1, 0, -1.0, 0, False),
        ("t5", "lavis"): ("lavis", short, "lavis-blip-question", 224, 5, 10, 1, 0, -1.0, 0, False),
        ("opt", "paper"): ("paper", answer, "lavis-blip-question", 224, 5, 10, 1, 0, -1.0, 0, True),
        ("opt", "lavis"): ("lavis", short, "lavis-blip-question", 224, 5, 10, 1, 0, 0.0, 32, True),
    }
    task = get_task("okvqa")
    for (family, name), values in expected.items():
        protocol = task.protocol_for(family, name)
        assert tuple(getattr(protocol, n) for n in names) == values, (family, name)
        assert not protocol.chat and protocol.repetition_penalty == 1.0 and protocol.dtype is None


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
