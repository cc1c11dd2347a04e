"""The hub-cache replicas the hub tests run on hold what the hub holds (issue 20 item 2).

Sources, read with the search tool (dataset cards, tree and commit pages on huggingface.co):
- lmms-lab/VQAv2: README.md dataset_info at d138bef (question_type, multiple_choice_answer, answers [{answer,
  answer_confidence, answer_id int64}], image_id int64, answer_type, question_id int64, question, image); tree pages
  /tree/32665d35052eb4a6d4414851c3c829a72754915a (main: "Update README.md", 138 commits) and /tree/65fe1e1... (the
  pinned data commit, 137 commits).
- lmms-lab/OK-VQA: README.md at c9f8589 (question_id string, image, question, answers sequence of strings,
  question_type, answer_type; split val2014, 5,046 rows); /tree/c9f8589.../data: val2014-0000{0,1}-of-00002.parquet.
- lmms-lab/GQA: commit 6ac3999 "Upload dataset" (README dataset_info of *_instructions: id, imageId, question,
  answer, fullAnswer, isBalanced bool, groups {global, local}, entailed, equivalent, types {structural, semantic,
  detailed}, annotations, semantic (dependencies int32), semanticStr).
- lmms-lab/NoCaps: README.md at 44ac713 (image, image_coco_url, image_date_captured, image_file_name, image_height
  int32, image_width int32, image_id int32, image_license int8, image_open_images_id, annotations_ids int32s,
  annotations_captions strings; validation 4,500 rows); tree at 58151ee: data/validation-00000-of-00003-
  55b5edbf01d47b39.parquet.
- nlphuji/flickr_1k_test_image_text_retrieval: its loading script (commit 034c476) declares image, caption,
  sentids, imgid, sentid, split, filename, tokens.
- huggingface_hub 2.x: the cache layout (guides/manage-cache) and ``trees/<commit>.json`` (module
  ``huggingface_hub._tree_cache``), read back here with huggingface_hub's own ``get_cached_repo_tree`` and
  ``scan_cache_dir``, so the replica's layout is checked by the library that writes the real one.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import FIXTURES
from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.data_arg import parse_data_arg

sys.path.insert(0, str(FIXTURES / "hub_cache"))
from replica import GQA_INSTRUCTION_COLUMNS, NOCAPS_COLUMNS, VQAV2_MAIN, write_gqa, write_karpathy_retrieval, \
    write_nocaps, write_okvqa, write_vqav2  # noqa: E402


def _schema(path: Path) -> dict[str, str]:
    return {field.name: str(field.type) for field in pq.read_schema(path)}


def test_vqav2_replica_layout_is_what_huggingface_hub_reads(tmp_path):
    import huggingface_hub

    from evalkit.tasks.vqav2 import HUB

    snapshot = write_vqav2(tmp_path, HUB.repo_id, HUB.revision)
    cache = tmp_path / "hub"
    listed = {f.path for f in huggingface_hub.get_cached_repo_tree(HUB.repo_id, repo_type="dataset",
                                                                   revision=HUB.revision, cache_dir=cache)}
    assert {"data/validation-00000-of-00002.parquet", "data/validation-00001-of-00002.parquet", "README.md",
            "data/testdev-00000-of-00001.parquet"} <= listed
    info = huggingface_hub.scan_cache_dir(cache)
    (repo,) = info.repos
    assert not info.warnings and set(repo.refs) == {"main"} and repo.refs["main"].commit_hash == VQAV2_MAIN
    assert {r.commit_hash for r in repo.revisions} == {HUB.revision, VQAV2_MAIN}
    for shard in snapshot.glob("data/*.parquet"):
        blob = Path(os.path.realpath(shard))
        assert blob.parent.name == "blobs" and blob.name == hashlib.sha256(blob.read_bytes()).hexdigest()
        assert pq.ParquetFile(shard).metadata.num_row_groups > 1
    assert _schema(snapshot / "data/validation-00000-of-00002.parquet") == {
        "question_type": "string", "multiple_choice_answer": "string",
        "answers": "list<element: struct<answer: string, answer_confidence: string, answer_id: int64>>",
        "image_id": "int64", "answer_type": "string", "question_id": "int64", "question": "string",
        "image": "struct<bytes: binary, path: string>"}


def test_okvqa_gqa_nocaps_flickr_replicas_have_every_hub_column(tmp_path):
    okvqa = write_okvqa(tmp_path, "lmms-lab-encoder/OK-VQA", "1" * 40)
    assert sorted(p.name for p in okvqa.glob("data/*")) == ["val2014-00000-of-00002.parquet",
                                                            "val2014-00001-of-00002.parquet"]
    assert list(_schema(okvqa / "data/val2014-00000-of-00002.parquet")) == [
        "question_id", "image", "question", "answers", "question_type", "answer_type"]

    gqa = write_gqa(tmp_path, "lmms-lab-encoder/GQA", "2" * 40)
    instructions = _schema(gqa / "testdev_balanced_instructions/testdev-00000-of-00001.parquet")
    assert list(instructions) == GQA_INSTRUCTION_COLUMNS and len(instructions) == 13
    assert instructions["groups"] == "struct<global: string, local: string>" and instructions["isBalanced"] == "bool"

    nocaps = write_nocaps(tmp_path, "lmms-lab-encoder/NoCaps", "3" * 40, n=6)
    shards = sorted(nocaps.glob("data/*.parquet"))
    assert len(shards) == 3 and shards[0].name == "validation-00000-of-00003-55b5edbf01d47b39.parquet"
    assert all(p.name.startswith(f"validation-{s:05d}-of-00003-") for s, p in enumerate(shards))
    columns = _schema(shards[0])
    assert list(columns) == NOCAPS_COLUMNS and len(columns) == 11
    assert columns["image_id"] == "int32" and columns["image_license"] == "int8"
    assert all(pq.ParquetFile(p).metadata.num_row_groups == 2 for p in shards)

    flickr = write_karpathy_retrieval(tmp_path, "nlphuji/flickr_1k_test_image_text_retrieval", "4" * 40, coco=False)
    assert list(_schema(flickr / "TEST/test/0000.parquet")) == ["image", "caption", "sentids", "imgid", "sentid",
                                                                "split", "filename", "tokens"]


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_nocaps_rows_across_hash_suffixed_shards_and_row_groups(offline):
    from evalkit.tasks.nocaps import HUB, TASKS

    write_nocaps(offline, HUB.repo_id, HUB.revision, n=6)
    sample_set = load_caption_set(parse_data_arg(HUB.to_arg()), "val", None, dict(TASKS[0].columns))
    assert [s.id for s in sample_set.samples] == [str(i) for i in range(6)]  # int32 ids, in shard order
    # the references are the annotations_captions column, read here with pyarrow (not evalkit)
    snapshot = offline / "hub" / f"datasets--{HUB.repo_id.replace('/', '--')}" / "snapshots" / HUB.revision
    column = {}
    for file in sorted(snapshot.glob("data/validation-*.parquet")):
        table = pq.read_table(file, columns=["image_id", "annotations_captions"]).to_pydict()
        column.update(zip(map(str, table["image_id"]), table["annotations_captions"]))
    assert {s.id: list(s.references) for s in sample_set.samples} == column
    assert len(sample_set.identity["files"]) == 3 and sample_set.identity["hub_split"] == "validation"
    last = sample_set.images.open(sample_set.samples[5].image)  # shard 2, its second row group
    assert last.mode == "RGB"
