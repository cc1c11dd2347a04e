"""nocaps with only --model, offline from a hub-cache replica; per-domain CIDEr from the official annotation file."""

from __future__ import annotations

import hashlib
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


def _official(run_dir: Path, record: dict, references: dict[int, list[str]], image_ids) -> dict[str, float]:
    """pycocoevalcap's COCOEvalCap on the run's official result file and the parquet's captions, on the given
    images (each nocaps domain is evaluated on its own images, as the nocaps evaluation server does), 0-100."""
    from official_coco_eval import official_coco_eval

    results = [r for r in json.loads((run_dir / record["official_predictions_file"]).read_text())
               if r["image_id"] in image_ids]
    dataset = {"images": [{"id": i} for i in image_ids], "annotations": [
        {"image_id": i, "caption": c, "id": n} for n, (i, c) in
        enumerate((i, c) for i in image_ids for c in references[i])]}
    scores = official_coco_eval(dataset, results).eval
    names = {"BLEU-1": "Bleu_1", "BLEU-2": "Bleu_2", "BLEU-3": "Bleu_3", "BLEU-4": "Bleu_4", "METEOR": "METEOR",
             "ROUGE-L": "ROUGE_L", "CIDEr": "CIDEr"}
    return {name: 100 * scores[key] for name, key in names.items()}


def _parquet_column(home: Path, column: str) -> dict[int, object]:
    """image_id -> ``column``, read from the cached parquet files with pyarrow (not evalkit)."""
    import pyarrow.parquet as pq

    found = {}
    for file in sorted(_snapshot(home).glob("data/validation-*.parquet")):
        table = pq.read_table(file, columns=["image_id", column]).to_pydict()
        found.update(zip(table["image_id"], table[column]))
    return found


def _snapshot(home: Path) -> Path:
    return home / "hub" / f"datasets--{HUB.repo_id.replace('/', '--')}" / "snapshots" / HUB.revision


def _snapshot_files(home: Path) -> dict[str, str]:
    snapshot = _snapshot(home)
    return {str(f.relative_to(snapshot)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(snapshot.glob("data/validation-*.parquet"))}


def test_nocaps_runs_with_only_model_offline(offline, java, tmp_path, capsys):
    """The bundled trained model (at its own 64 px) captions the replica; the metrics are recomputed by the
    official COCO caption evaluation from the run's result file and the parquet's own captions."""
    code, out, err = run_cli(["run", "nocaps", "-m", "blip2-tiny-opt", "--image-size", "64", "--results",
                              str(tmp_path), *FAST], capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path)
    assert record["data"]["dataset_id"] == HUB.repo_id and record["data"]["hub_split"] == "validation"
    assert "CIDEr" in record["metrics"] and not any("/" in m for m in record["metrics"])
    assert "not labelled" in record["details"]["domains"]
    results = json.loads((run_dir / record["official_predictions_file"]).read_text())
    references = _parquet_column(offline, "annotations_captions")
    assert sorted(r["image_id"] for r in results) == sorted(references)
    official = _official(run_dir, record, references, sorted(references))
    assert official["BLEU-4"] != official["ROUGE-L"] and official["ROUGE-L"] > 0
    # relative, not absolute: the tiny model's BLEU-4 is about 1e-10, so an absolute tolerance would let BLEU-3's
    # value pass as BLEU-4 (found by breaking it); evalkit runs the official scorers, so the numbers are equal
    for name, value in official.items():
        assert record["metrics"][name]["value"] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert record["data"]["files"] == _snapshot_files(offline)  # each etag is the sha256 of the file read


def test_domains_from_the_annotation_file(offline, java, tmp_path, capsys):
    """Per-domain CIDEr equals COCOEvalCap run on each domain's images alone. The tiny model's captions share no
    n-gram with these references (CIDEr 0 everywhere), so each image's first reference goes into the journal as its
    caption and a second run re-scores it. Two images in one domain and one in the other: a one-image corpus has
    CIDEr 0 (every n-gram's document frequency is the corpus size), so scoring a domain inside the whole corpus
    shows."""
    references = _parquet_column(offline, "annotations_captions")
    ids = sorted(references)
    assert len(ids) >= 3
    domains = ["in-domain"] * (len(ids) - 1) + ["near-domain"]
    annotation = tmp_path / "nocaps_val_4500_captions.json"
    open_ids = _parquet_column(offline, "image_open_images_id")  # the official file names images by these ids
    annotation.write_text(json.dumps({"images": [{"id": i, "file_name": f"{open_ids[i]}.jpg",
                                                  "open_images_id": open_ids[i], "domain": d}
                                                 for i, d in zip(ids, domains)], "annotations": []}))
    args = ["run", "nocaps", "-m", "blip2-tiny-opt", "--image-size", "64", "--results", str(tmp_path / "r"),
            "--column", f"domain_file={annotation}", *FAST]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path / "r")
    assert record["details"]["domains"] == {"in-domain": len(ids) - 1, "near-domain": 1}
    assert record["data"]["domain_file_sha256"] == hashlib.sha256(annotation.read_bytes()).hexdigest()
    journal = run_dir / "predictions.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    for line in lines:
        line["prediction"] = line["references"][0]
    journal.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    record, run_dir = _record(tmp_path / "r")
    assert record["counts"]["generated_this_invocation"] == 0
    for domain in ("in-domain", "near-domain"):
        official = _official(run_dir, record, references, [i for i, d in zip(ids, domains) if d == domain])
        assert record["metrics"][f"CIDEr/{domain}"]["value"] == pytest.approx(official["CIDEr"], abs=0.005), domain
    assert record["metrics"]["CIDEr/in-domain"]["value"] > 0
    overall = _official(run_dir, record, references, ids)
    assert record["metrics"]["CIDEr"]["value"] == pytest.approx(overall["CIDEr"], abs=0.005) and overall["CIDEr"] > 0
