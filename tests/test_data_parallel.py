"""Data-parallel runs: 2 processes under torchrun (gloo, CPU) equal a one-process run; a killed rank resumes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from evalkit.core.samples import order_by_image as image_order
from evalkit.engine.distributed import Ranks, ranks_from_env, shard_by_image
from evalkit.core.samples import Sample

REPO = Path(__file__).resolve().parent.parent
COMMAND = ["run", "shapes-vqa", "-m", "blip2-tiny-opt", "--limit", "60", "-q", "--batch-size", "2"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RANK1_DIES = """
import os, signal
from evalkit.engine.journal import PredictionJournal

if os.environ.get("RANK") == "1":
    append = PredictionJournal.append

    def append_then_die(self, predictions):
        append(self, predictions)
        os.kill(os.getpid(), signal.SIGKILL)

    PredictionJournal.append = append_then_die
from evalkit.cli.main import main

main()
"""


def _launch(results: Path, nproc: int | None, program: tuple[str, ...] = ("-m", "evalkit")) -> subprocess.Popen:
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                                         "--master_port", str(_free_port())]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.Popen([sys.executable, *launcher, *program, *COMMAND, "--results", str(results)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _run(results: Path, nproc: int | None = None) -> tuple[dict, Path]:
    process = _launch(results, nproc)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0, out
    (run_json,) = results.glob("*/shapes-vqa/*/run.json")
    return json.loads(run_json.read_text()), run_json.parent


def _same_as_one_process(record: dict, run_dir: Path, single: dict, single_dir: Path) -> None:
    merged = (run_dir / "predictions.jsonl").read_bytes()
    assert merged == (single_dir / "predictions.jsonl").read_bytes()
    ids = [json.loads(line)["id"] for line in merged.splitlines()]
    assert len(ids) == len(set(ids)) == 60
    assert record["metrics"] == single["metrics"] and record["details"] == single["details"]
    assert (run_dir / "sample_scores.jsonl").read_bytes() == (single_dir / "sample_scores.jsonl").read_bytes()
    assert record["data"]["images"] == single["data"]["images"]
    assert record["runtime"]["world_size"] == 2 and single["runtime"]["world_size"] == 1
    assert not list(run_dir.glob("*.rank*")), "the rank journals are merged away"


def test_two_processes_equal_one_and_a_killed_rank_resumes(tmp_path):
    single, single_dir = _run(tmp_path / "one")
    record, run_dir = _run(tmp_path / "two", nproc=2)
    _same_as_one_process(record, run_dir, single, single_dir)
    ranks = record["runtime"]["data_parallel"]["ranks"]
    assert [r["samples"] for r in ranks] == [30, 30] and sum(r["generated"] for r in ranks) == 60

    # rank 1 is killed (kill -9) right after journaling its first window (whole images, >= 4 batches of 2), so the
    # launcher stops rank 0 too;
    # then the same command resumes both shards
    wrapper = tmp_path / "rank1_dies.py"
    wrapper.write_text(RANK1_DIES)
    results = tmp_path / "killed"
    process = _launch(results, nproc=2, program=(str(wrapper),))
    out, _ = process.communicate(timeout=120)
    assert process.returncode != 0 and not list(results.glob("*/shapes-vqa/*/run.json")), out
    (rank1,) = results.glob("*/shapes-vqa/*/predictions.rank1-of-2.jsonl")
    assert 8 <= rank1.read_bytes().count(b"\n") < 30  # one window of its 30 samples
    journaled = sum(p.read_bytes().count(b"\n") for p in results.glob("*/shapes-vqa/*/predictions.rank*.jsonl"))
    shutil.copytree(results, tmp_path / "killed-then-one-process")  # a one-process rerun resumes the shards too
    record, run_dir = _run(tmp_path / "killed-then-one-process")
    assert record["counts"]["resumed_from_journal"] == journaled and record["metrics"] == single["metrics"]
    assert not list(run_dir.glob("*.rank*"))
    record, run_dir = _run(results, nproc=2)
    _same_as_one_process(record, run_dir, single, single_dir)
    assert record["counts"]["resumed_from_journal"] == journaled > 0
    assert record["counts"]["generated_this_invocation"] == 60 - journaled


def _samples(images: list[str]) -> list[Sample]:
    return [Sample(id=f"q{i}", image=image) for i, image in enumerate(images)]


def test_shards_by_image_cover_every_sample_once():
    samples = _samples(["a", "a", "b", "c", "b", "d", "e", "a"])
    shards = [shard_by_image(samples, rank, 3) for rank in range(3)]
    assert sorted(s.id for shard in shards for s in shard) == sorted(s.id for s in samples)  # no padding
    assert [[s.image for s in shard] for shard in shards] == [["a", "a", "d", "a"], ["b", "b", "e"], ["c"]]
    assert [s.id for s in image_order(samples)] == ["q0", "q1", "q7", "q2", "q4", "q3", "q5", "q6"]
    assert shard_by_image(samples, 0, 1) == samples


def test_ranks_come_from_the_launcher_environment():
    assert ranks_from_env({}) == Ranks(0, 1, 0)
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)


def test_retrieval_refuses_to_run_on_several_ranks(tmp_path, capsys, monkeypatch):
    from conftest import run_cli

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    code, _, err = run_cli(["run", "shapes-retrieval", "-m", "blip2-tiny-itm", "--results", str(tmp_path), "-q"],
                           capsys)
    assert code == 2 and "runs in one process only" in err and "WORLD_SIZE=2" in err
    assert not list(tmp_path.iterdir())
