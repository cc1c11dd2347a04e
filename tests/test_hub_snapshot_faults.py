"""Hub snapshots that are not what was pinned, and hub columns that are not what the task reads: each a one-line
error naming the file, column or split, exit 2 (issue 19 cases H01, H03, H05, H06, H07, H09, H10, H11, H14, H16;
issue 20: a partial snapshot with and without the tree listing). `evalkit run vqav2` with only --model, offline,
on a replica of the hub cache (tests/fixtures/hub_cache/replica.py) broken the way each case says."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, run_cli
from evalkit.tasks.vqav2 import HUB

sys.path.insert(0, str(FIXTURES / "hub_cache"))
from replica import VQAV2_MAIN, image_bytes, parquet_bytes, vqav2_features, vqav2_rows, write_vqav2  # noqa: E402

FAST = ["--num-beams", "1", "--max-new-tokens", "2", "-q"]
SHARD_0 = "data/validation-00000-of-00002.parquet"
SHARD_1 = "data/validation-00001-of-00002.parquet"


@pytest.fixture
def hf_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EVALKIT_CACHE", str(tmp_path / "evalkit-cache"))
    return home


def run(tiny_opt, results: Path, capsys, *extra: str) -> tuple[int, str]:
    capsys.readouterr()  # the replica writer's progress bars
    code, _, err = run_cli(["run", "vqav2", "-m", str(tiny_opt), "--results", str(results), *FAST, *extra], capsys)
    return code, err


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "internal error" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def blob_of(snapshot: Path, relative: str) -> Path:
    return Path(os.path.realpath(snapshot / relative))


def test_the_replica_pins_a_commit_that_is_not_main(hf_home):
    """refs/main names the README edit after the data commit; the run reads (and records) the pinned commit."""
    from evalkit.data.data_arg import parse_data_arg
    from evalkit.data.vqa_datasets import load_vqa_set

    write_vqav2(hf_home, HUB.repo_id, HUB.revision)
    repo = hf_home / "hub" / "datasets--lmms-lab-encoder--VQAv2"
    assert (repo / "refs" / "main").read_text() == VQAV2_MAIN != HUB.revision
    assert not (repo / "snapshots" / VQAV2_MAIN / "data").exists()  # main's download fetched only README.md
    identity = load_vqa_set(parse_data_arg(HUB.to_arg()), "val").identity
    assert identity["resolved_revision"] == HUB.revision and identity["n_total"] == 6


@pytest.mark.parametrize("damage, needle", [
    ("truncate", "not a readable parquet file"),  # H01
    ("empty", "not a readable parquet file"),  # H07
])
def test_a_truncated_or_empty_shard_is_named(damage, needle, hf_home, tiny_opt, tmp_path, capsys):
    snapshot = write_vqav2(hf_home, HUB.repo_id, HUB.revision)
    blob = blob_of(snapshot, SHARD_1)
    content = blob.read_bytes()
    blob.write_bytes(content[: len(content) // 2] if damage == "truncate" else b"")
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    assert_one_line(code, err, str(snapshot / SHARD_1), needle)


@pytest.mark.parametrize("listing", [False, True])
def test_a_dangling_shard_link_is_named(listing, hf_home, tiny_opt, tmp_path, capsys):  # H06
    snapshot = write_vqav2(hf_home, HUB.repo_id, HUB.revision, listing=listing)
    blob_of(snapshot, SHARD_1).unlink()
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    if listing:
        assert_one_line(code, err, "incomplete", SHARD_1, "hf download")
    else:
        assert_one_line(code, err, str(snapshot / SHARD_1), "links to a blob that is not in the cache")
    assert "not in the Hugging Face cache" not in err


@pytest.mark.parametrize("listing", [False, True])
def test_a_missing_shard_is_named(listing, hf_home, tiny_opt, tmp_path, capsys):  # H05; issue 20 item 3
    snapshot = write_vqav2(hf_home, HUB.repo_id, HUB.revision, listing=listing)
    (snapshot / SHARD_1).unlink()
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    assert_one_line(code, err, SHARD_1, "hf download --repo-type dataset")
    assert ("incomplete" in err) == listing and "not in the Hugging Face cache" not in err
    assert not list((tmp_path / "r").glob("*/vqav2/*/run.json"))


@pytest.mark.parametrize("listing", [False, True])
@pytest.mark.parametrize("stray", ["data/validation-extra.parquet", "data/validation-00002-of-00003.parquet",
                                   "data/validation-00002-of-00002.parquet"])
def test_a_stray_parquet_matching_the_glob_is_refused(stray, listing, hf_home, tiny_opt, tmp_path, capsys):  # H16
    snapshot = write_vqav2(hf_home, HUB.repo_id, HUB.revision, listing=listing)
    rows = vqav2_rows(n_images=1)
    rows["question_id"] = [q + 500 for q in rows["question_id"]]  # 3 more questions: 9 rows ran, exit 0, before
    (snapshot / stray).write_bytes(parquet_bytes(rows, vqav2_features()))  # a plain file the hub never listed
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    assert_one_line(code, err, "remove")
    if listing:
        assert str(snapshot / stray) in err and "not a file of revision" in err
    else:
        assert str(snapshot / stray) in err or "more than one shard series" in err


def test_bytes_flipped_inside_an_image_that_still_decodes_are_refused(hf_home, tiny_opt, tmp_path, capsys):  # H03
    snapshot = write_vqav2(hf_home, HUB.repo_id, HUB.revision)
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    assert code == 0, err  # verified once: the stamp spares the next runs the read...
    blob = blob_of(snapshot, SHARD_1)
    content = bytearray(blob.read_bytes())
    jpeg = bytes(image_bytes(1))
    start = content.find(jpeg) + len(jpeg) // 2  # mid-JPEG: the parquet still reads, PIL still decodes
    assert start > len(jpeg) // 2
    content[start:start + 64] = bytes(b ^ 0x55 for b in content[start:start + 64])
    blob.write_bytes(bytes(content))
    import pyarrow.parquet as pq
    from PIL import Image
    import io

    flipped = pq.read_table(blob, columns=["image"]).column(0).to_pylist()[0]["bytes"]
    assert flipped != jpeg and Image.open(io.BytesIO(flipped)).convert("RGB").size  # still decodes
    code, err = run(tiny_opt, tmp_path / "r2", capsys)  # ...but a changed blob is read and hashed again
    assert_one_line(code, err, str(snapshot / SHARD_1), "corrupt", blob.name[:12])


def test_answers_held_as_strings_are_refused(hf_home, tiny_opt, tmp_path, capsys):  # H09
    import datasets

    rows = vqav2_rows()
    rows["answers"] = [r[0]["answer"] for r in rows["answers"]]  # "yes": a string, scored as ["y", "e", "s"] before
    features = datasets.Features({**vqav2_features(), "answers": datasets.Value("string")})
    write_vqav2(hf_home, HUB.repo_id, HUB.revision, rows=rows, features=features)
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    first = rows["question_id"][0]
    assert_one_line(code, err, "column 'answers'", f"question {first}", "'yes'", "--column answers=")


def test_a_string_column_mapped_as_answers_is_refused(hf_home, tiny_opt, tmp_path, capsys):  # H10
    write_vqav2(hf_home, HUB.repo_id, HUB.revision)
    code, err = run(tiny_opt, tmp_path / "r", capsys, "--column", "answers=multiple_choice_answer")
    assert_one_line(code, err, "column 'multiple_choice_answer'", f"question {vqav2_rows()['question_id'][0]}")


def test_a_column_mapping_is_part_of_the_run_identity(hf_home, tiny_opt, tmp_path, capsys):  # H10
    write_vqav2(hf_home, HUB.repo_id, HUB.revision)
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    assert code == 0, err
    code, err = run(tiny_opt, tmp_path / "r", capsys, "--column", "answer_type=question_type")
    assert code == 0, err
    plain, mapped = sorted((tmp_path / "r").glob("*/vqav2/*/run.json"), key=lambda p: "columns" in p.read_text())
    assert plain.parent != mapped.parent
    record = json.loads(mapped.read_text())
    assert record["data"]["columns"] == {"answer_type": "question_type"} and "columns" not in \
        json.loads(plain.read_text())["data"]
    assert set(record["metrics"]) != set(json.loads(plain.read_text())["metrics"])  # the per-type tables moved


def test_a_row_with_nine_answers_is_refused(hf_home, tiny_opt, tmp_path, capsys):  # H14
    rows = vqav2_rows()
    rows["answers"][4] = rows["answers"][4][:9]
    write_vqav2(hf_home, HUB.repo_id, HUB.revision, rows=rows)
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    assert_one_line(code, err, "9 answers, not 10", f"question {rows['question_id'][4]}", "column 'answers'")


def test_an_empty_split_names_dataset_and_split(hf_home, tiny_opt, tmp_path, capsys):  # H11
    write_vqav2(hf_home, HUB.repo_id, HUB.revision, shards=1, rows={k: [] for k in vqav2_rows()})
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    assert_one_line(code, err, HUB.repo_id, "split 'val'", "no rows", "validation")


def test_an_unpinned_hf_dataset_with_string_answers_is_refused_too(tmp_path):  # H09 through `hf:ID`
    import datasets

    from evalkit.core.errors import EvalkitError
    from evalkit.data.data_arg import parse_data_arg
    from evalkit.data.vqa_datasets import load_vqa_set

    rows = vqav2_rows(n_images=1)
    datasets.Dataset.from_dict(rows, features=vqav2_features()).save_to_disk(str(tmp_path / "ok"))
    loaded = load_vqa_set(parse_data_arg(f"hf:{tmp_path / 'ok'}"), "validation")
    assert loaded.samples[0].references == ("yes",) * 7 + ("no",) * 3
    rows["answers"] = ["yes", "2", "red"]
    features = datasets.Features({**vqav2_features(), "answers": datasets.Value("string")})
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "strings"))
    with pytest.raises(EvalkitError, match=r"row 0 \(question \d+\): column 'answers' holds 'yes', not a list of 10"):
        load_vqa_set(parse_data_arg(f"hf:{tmp_path / 'strings'}"), "validation")


def test_a_link_to_another_blob_than_the_listed_one_is_refused(hf_home, tiny_opt, tmp_path, capsys):
    """Both blobs are intact (each hashes to its name), but shard 1's link points at shard 0's: the listing says
    which blob the revision has for that path."""
    snapshot = write_vqav2(hf_home, HUB.repo_id, HUB.revision)
    (snapshot / SHARD_1).unlink()
    os.symlink(os.readlink(snapshot / SHARD_0), snapshot / SHARD_1)
    code, err = run(tiny_opt, tmp_path / "r", capsys)
    assert_one_line(code, err, str(snapshot / SHARD_1), "but revision", HUB.revision)
    assert blob_of(snapshot, SHARD_0).name[:12] in err  # the blob it links to
