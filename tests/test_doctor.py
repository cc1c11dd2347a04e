"""`evalkit doctor`: the golden check (identical on the pinned versions, a tampered file names the sample, exit 1),
known-bad transformers, the hub cache (complete, incomplete, missing), one line per problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_cli

from evalkit.doctor import golden


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path, monkeypatch):
    """Each test sees a hub cache it built (none of the machine's real downloads)."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    """`evalkit doctor`'s own output and exit code, with the real golden check against the shipped file, and the
    answers it computed (reused by the tampered-file test instead of a second run)."""
    import io
    import sys
    from contextlib import redirect_stdout

    from evalkit.cli.main import main

    computed = {}
    real = golden.compute_answers

    def recording(results_dir):
        computed.update(real(results_dir))
        return computed

    cache = tmp_path_factory.mktemp("hub-cache")
    old_env, old_argv = os.environ.get("HF_HUB_CACHE"), sys.argv
    os.environ["HF_HUB_CACHE"] = str(cache)
    golden.compute_answers = recording
    sys.argv, out, code = ["evalkit", "doctor"], io.StringIO(), 0
    try:
        with redirect_stdout(out):
            main()
    except SystemExit as exit_:
        code = exit_.code or 0
    finally:
        golden.compute_answers, sys.argv = real, old_argv
        if old_env is None:
            os.environ.pop("HF_HUB_CACHE", None)
        else:
            os.environ["HF_HUB_CACHE"] = old_env
    return code, out.getvalue(), computed


def test_golden_answers_identical_on_the_pinned_versions(golden_run):
    code, out, computed = golden_run
    shipped = json.loads(golden.GOLDEN_FILE.read_text())
    from importlib.metadata import version

    import torch

    assert (shipped["made_with"]["torch"], shipped["made_with"]["transformers"]) == \
        (torch.__version__, version("transformers")), "the suite runs on the versions the golden file pins"
    assert code == 0, out
    assert "identical: 7 runs" in out and "all well" in out
    assert computed == shipped["answers"]
    # the slice holds answers that differ between models and samples (a constant answer would pass anything)
    assert computed["shapes-vqa/blip2-tiny-opt"] != computed["shapes-vqa/blip2-tiny-t5"] or \
        computed["shapes-chat/blip2-tiny-opt"] != computed["shapes-chat/blip2-tiny-t5"]
    assert len(set(computed["shapes-caption/blip2-tiny-t5"].values())) > 3
    # environment section: what a bug report needs
    for name in ("python", "torch", "transformers", "accelerate", "GPUs", "java (metrics)", "hub cache"):
        assert name in out


def test_tampered_golden_file_exits_1_naming_the_sample(golden_run, tmp_path, monkeypatch, capsys):
    _, _, computed = golden_run
    tampered = json.loads(golden.GOLDEN_FILE.read_text())
    sample = sorted(tampered["answers"]["shapes-vqa/blip2-tiny-t5"])[3]
    tampered["answers"]["shapes-vqa/blip2-tiny-t5"][sample] = "purple"
    path = tmp_path / "golden.json"
    path.write_text(json.dumps(tampered))
    monkeypatch.setattr(golden, "compute_answers", lambda results_dir: computed)
    code, out, _ = run_cli(["doctor", "--golden-file", str(path)], capsys)
    assert code == 1
    assert f"problem: golden answers differ: shapes-vqa/blip2-tiny-t5 sample {sample}: golden 'purple', got " in out
    assert "DIFFERENT" in out and "1 samples differ" in out


def test_compare_answers_counts_each_difference():
    expected = {"a/m": {"1": "x", "2": "y"}, "b/m": {"q": 0}}
    first, counts = golden.compare_answers(expected, {"a/m": {"1": "x", "2": "z"}, "b/m": {"q": 1}})
    assert first == "a/m sample 2: golden 'y', got 'z'" and counts == {"a/m": 1, "b/m": 1}
    assert golden.compare_answers(expected, json.loads(json.dumps(expected))) == (None, {"a/m": 0, "b/m": 0})
    first, _ = golden.compare_answers(expected, {"a/m": {"1": "x", "2": "y"}})
    assert first == "b/m sample q: golden 0, got '(absent)'"


def test_unreadable_golden_file_is_one_problem(tmp_path, capsys):
    path = tmp_path / "golden.json"
    path.write_text("{not json")
    code, out, _ = run_cli(["doctor", "--golden-file", str(path)], capsys)
    assert code == 1
    assert f"problem: golden check could not run: cannot read golden answers {path}" in out


def test_known_bad_transformers_is_a_problem(monkeypatch, capsys):
    from evalkit.doctor import checkup
    from evalkit.models import known_breakages

    assert [b.evidence for b in known_breakages.breakages_for("4.52.2")] == \
        ["https://github.com/huggingface/transformers/issues/38858"]
    assert any("34223" in b.evidence for b in known_breakages.breakages_for("4.45.2"))
    assert known_breakages.breakages_for("4.51.3") == []
    real = checkup._versions
    monkeypatch.setattr(checkup, "_versions", lambda found, installed: real(found, "4.52.2"))
    code, out, _ = run_cli(["doctor", "--no-golden"], capsys)
    assert code == 1
    assert "problem: transformers 4.52.2 is known to break BLIP-2" in out and "issues/38858" in out
    monkeypatch.setattr(checkup, "_versions", lambda found, installed: real(found, "4.30.0"))
    code, out, _ = run_cli(["doctor", "--no-golden"], capsys)
    assert code == 1
    assert "problem: transformers 4.30.0 is outside the range evalkit supports (transformers" in out
    assert ">=4.46.3" in out


def _snapshot(cache: Path, kind: str, repo: str, sha: str, files: dict[str, bytes], ref: str | None = None) -> Path:
    """A hub-cache entry laid out as huggingface_hub writes it: blobs, snapshot links, refs."""
    root = cache / f"{kind}s--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / sha
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        blob = root / "blobs" / f"blob{abs(hash(name))}"
        blob.write_bytes(content)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(blob)
    if ref:
        (root / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(sha)
    return root


def test_hub_cache_states_per_task_and_model(empty_hub_cache, capsys):
    from evalkit.core.registry import get_task
    from evalkit.data.hub_datasets import parse_hub_source

    vqav2 = parse_hub_source(get_task("vqav2").default_data[3:])
    okvqa = parse_hub_source(get_task("okvqa").default_data[3:])
    nocaps = parse_hub_source(get_task("nocaps").default_data[3:])
    glob = dict(vqav2.files)["val"].replace("*", "00000-of-00001")
    _snapshot(empty_hub_cache, "dataset", vqav2.repo_id, vqav2.revision, {glob: b"parquet"})
    # one shard of two: the check `evalkit run` makes (evalkit.data.hub_snapshot) calls it incomplete
    _snapshot(empty_hub_cache, "dataset", nocaps.repo_id, nocaps.revision,
              {dict(nocaps.files)["val"].replace("*", "00000-of-00002"): b"parquet"})
    partial = _snapshot(empty_hub_cache, "dataset", okvqa.repo_id, okvqa.revision,
                        {dict(okvqa.files)["val"].replace("*", "00000"): b"parquet"})
    (partial / "blobs" / "abc.incomplete").write_bytes(b"half")
    _snapshot(empty_hub_cache, "model", "Salesforce/blip2-opt-2.7b", "c" * 40,
              {"config.json": b"{}", "model.safetensors.index.json":
               json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                          "b": "model-00002-of-00002.safetensors"}}).encode(),
               "model-00001-of-00002.safetensors": b"w"}, ref="main")
    _snapshot(empty_hub_cache, "model", "Salesforce/blip2-flan-t5-xl", "d" * 40,
              {"config.json": b"{}", "model.safetensors": b"w"}, ref="main")
    code, out, _ = run_cli(["doctor", "--no-golden", "--model", "blip2-flan-t5-xl", "--model", "blip2-opt-2.7b",
                            "--model", "blip2-tiny-t5"], capsys)
    assert code == 1
    assert f"  vqav2: {vqav2.repo_id}@{vqav2.revision[:12]} (val): complete" in out
    assert f"  okvqa: {okvqa.repo_id}@{okvqa.revision[:12]} (val): incomplete (1 download cut short" in out
    assert "  gqa: lmms-lab-encoder/GQA@" in out
    assert "(testdev): missing (lmms-lab-encoder/GQA is not in the cache)" in out
    assert "  blip2-flan-t5-xl: Salesforce/blip2-flan-t5-xl: complete" in out
    assert "  blip2-opt-2.7b: Salesforce/blip2-opt-2.7b: incomplete (shard model-00002-of-00002.safetensors missing)" \
        in out
    assert "  blip2-tiny-t5: local folder " in out
    assert f"  nocaps: {nocaps.repo_id}@{nocaps.revision[:12]} (val): incomplete (" in out
    assert "shard data/validation-00001-of-00002.parquet is missing" in out
    problems = [line for line in out.splitlines() if line.startswith("problem:")]
    assert len(problems) == 3 and problems[0].startswith("problem: task nocaps: dataset ")
    assert problems[1:] == [  # a missing dataset is not a problem while the hub can be reached
        f"problem: task okvqa: dataset {okvqa.repo_id}@{okvqa.revision[:12]} (val) incomplete in the hub cache "
        "(1 download cut short (blobs/*.incomplete))",
        "problem: model blip2-opt-2.7b: Salesforce/blip2-opt-2.7b incomplete in the hub cache "
        "(shard model-00002-of-00002.safetensors missing)"]


def test_offline_missing_dataset_is_a_problem(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, _ = run_cli(["doctor", "--no-golden"], capsys)
    assert code == 1
    assert "problem: task vqav2: dataset lmms-lab-encoder/VQAv2@" in out


def test_doctor_says_whether_meteors_paraphrase_index_is_built(tmp_path, monkeypatch, capsys):
    from evalkit.metrics import meteor_paraphrase

    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "cache"))
    code, out, _ = run_cli(["doctor", "--no-golden"], capsys)
    assert code == 0, out
    assert f"METEOR paraphrase index  not built yet: the first caption scoring builds it (about 10 s) into " \
           f"{tmp_path / 'cache' / 'meteor-paraphrase'}" in out
    digest = meteor_paraphrase.hashlib.sha256(meteor_paraphrase.PARAPHRASE_TABLE.read_bytes()).hexdigest()
    index_file = meteor_paraphrase._index_file(digest)
    index_file.parent.mkdir(parents=True)
    index_file.write_bytes(b"x" * 3_000_000)
    code, out, _ = run_cli(["doctor", "--no-golden"], capsys)
    assert f"METEOR paraphrase index  built: {index_file} (3 MB)" in out
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("EVALKIT_CACHE", str(blocker / "cache"))
    code, out, _ = run_cli(["doctor", "--no-golden"], capsys)
    assert f"METEOR paraphrase index  not built, and {blocker / 'cache' / 'meteor-paraphrase'} cannot be written: " \
           "METEOR reads its whole table" in out


def test_all_well_without_golden_exits_0(capsys):
    code, out, _ = run_cli(["doctor", "--no-golden"], capsys)
    assert code == 0, out
    assert out.rstrip().endswith("all well")


def test_run_on_a_known_bad_transformers_is_not_reportable(tmp_path, monkeypatch):
    from evalkit.core.run_options import RunOptions
    from evalkit.engine import run_record
    from evalkit.engine.evaluate import run_task
    from evalkit.models import known_breakages

    monkeypatch.setattr(run_record, "breakage_reasons", lambda: known_breakages.breakage_reasons("4.52.4"))
    record = run_task(RunOptions(task="shapes-vqa", model="blip2-tiny-opt", results_dir=tmp_path, limit=2,
                                 device="cpu", show_progress=False)).record
    assert record["reportable"] is False
    assert any(reason.startswith("transformers 4.52.4 is known to break BLIP-2") and "issues/38858" in reason
               for reason in record["not_reportable_reasons"])
