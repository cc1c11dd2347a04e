"""The demo-model training script is deterministic (the basis of the retraining tolerance in
evalkit/demo/MODELS.md) and writes checkpoints the harness loads like any other."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("blip2-tiny-opt", "blip2-tiny-t5", "blip2-tiny-itm")
TINY_RUN = ["--train-images", "48", "--batch-size", "4", "--stage0-steps", "3", "--opt-steps", "3",
            "--t5-steps", "3", "--itm-steps", "3", "--itm-text-steps", "2", "--threads", "1", "--no-eval"]


def _train(out: Path, seed: int, models: str = "opt,t5,itm") -> dict[str, str]:
    """Run the real script with a few steps; sha256 of every written weights file."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_demo_models.py"), "--out-root", str(out),
                           "--seed", str(seed), "--models", models, *TINY_RUN],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {m: hashlib.sha256((out / m / "model.safetensors").read_bytes()).hexdigest()
            for m in MODELS if (out / m).is_dir()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict, dict, dict]:
    root = tmp_path_factory.mktemp("train")
    first = _train(root / "a", seed=0)
    again = _train(root / "b", seed=0)
    other = _train(root / "c", seed=1)
    return root, first, again, other


def test_same_seed_gives_identical_weights(trained):
    _, first, again, _ = trained
    assert set(first) == set(MODELS)  # every model written, so equality is not {} == {}
    assert first == again


def test_one_model_alone_equals_that_model_from_the_full_run(trained, tmp_path):
    # each model's training is seeded on its own, so `--models itm` rewrites the shipped ITM model
    alone = _train(tmp_path / "itm", seed=0, models="itm")
    assert alone == {"blip2-tiny-itm": trained[1]["blip2-tiny-itm"]}


def test_seed_changes_the_weights(trained):
    _, first, _, other = trained
    assert all(first[m] != other[m] for m in MODELS)


def test_weights_are_stored_fp16_with_a_tokenizer(trained):
    root = trained[0]
    for m in MODELS:
        with safe_open(str(root / "a" / m / "model.safetensors"), "pt") as f:
            dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
        assert dtypes <= {"F16", "I64"}, (m, dtypes)
        assert (root / "a" / m / "tokenizer.json").is_file()


@pytest.mark.parametrize("task,model", [("shapes-vqa", "blip2-tiny-opt"), ("shapes-vqa", "blip2-tiny-t5"),
                                        ("shapes-retrieval", "blip2-tiny-itm")])
def test_trained_checkpoint_runs_through_evalkit(trained, tmp_path, capsys, task, model):
    code, out, err = run_cli(["run", task, "-m", str(trained[0] / "a" / model), "--limit", "6", "--results",
                              str(tmp_path), "-q", "--device", "cpu"], capsys)
    assert code == 0, out + err
    (run_json,) = tmp_path.rglob("run.json")
    record = json.loads(run_json.read_text())
    # evalkit's weights hash: sha256 over "file name:file sha256" lines of the weight files (here one)
    file_digest = trained[1][model]
    assert record["model"]["weights_sha256"] == hashlib.sha256(f"model.safetensors:{file_digest}".encode()).hexdigest()


def test_demo_models_dir_names_the_missing_checkpoint(trained, tmp_path, capsys):
    partial = tmp_path / "models"
    partial.mkdir()
    (partial / "blip2-tiny-opt").symlink_to(trained[0] / "a" / "blip2-tiny-opt")
    code, out, err = run_cli(["demo", "--models-dir", str(partial), "--results", str(tmp_path / "r"), "-q"], capsys)
    assert code == 2
    assert "blip2-tiny-itm" in err and "blip2-tiny-t5" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
