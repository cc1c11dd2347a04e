"""Every "not here" error says how to get it: the exact `hf download` command and HF_HUB_OFFLINE, and one error
naming both when a run's dataset and model are both missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHAPES_IMAGE = Path(__file__).parents[1] / "evalkit/demo/data/shapes/images/shapes_test_000001.png"


def evalkit_offline(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    """`evalkit ARGS` in a fresh process with an empty hub cache and HF_HUB_OFFLINE=1."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"))
    return subprocess.run([sys.executable, "-m", "evalkit", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_a_missing_model_names_its_download_command(tmp_path):
    done = evalkit_offline(["caption", str(SHAPES_IMAGE), "--model", "blip2-opt-2.7b", "-q"], tmp_path / "hub")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "`hf download Salesforce/blip2-opt-2.7b`" in lines[0] and "HF_HUB_OFFLINE=1" in lines[0]
    assert "HF_HUB_OFFLINE is set" in lines[0]


def test_a_run_missing_both_dataset_and_model_says_both_in_one_error(tmp_path):
    done = evalkit_offline(["run", "vqav2", "--model", "blip2-opt-2.7b", "-q"], tmp_path / "hub")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "hf download --repo-type dataset lmms-lab-encoder/VQAv2 --revision" in lines[0]
    assert "`hf download Salesforce/blip2-opt-2.7b`" in lines[0]
    assert lines[0].index("dataset") < lines[0].index("model Salesforce")
