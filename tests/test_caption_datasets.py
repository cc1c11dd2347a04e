"""Every supported captioning format loads to the same samples."""

from __future__ import annotations

import json

import pytest

from conftest import COCO_FIXTURE, coco_annotations, write_karpathy
from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.data_arg import parse_data_arg
from evalkit.core.errors import EvalkitError


def _by_id(sample_set):
    return {s.id: (s.references, s.image.rsplit("/", 1)[-1]) for s in sample_set.samples}


def test_karpathy_coco_lavis_and_hf_agree(tmp_path):
    karpathy = load_caption_set(parse_data_arg(str(write_karpathy(tmp_path / "k"))), "test")
    assert len(karpathy.samples) == 6 and karpathy.identity["format"] == "karpathy"
    coco = load_caption_set(parse_data_arg(str(COCO_FIXTURE / "captions_val2017_sample8.json")), "test",
                            COCO_FIXTURE / "val2017")
    assert len(coco.samples) == 8
    assert all(coco.images.open(s.image).size[0] > 0 for s in coco.samples[:2])
    lavis_file = tmp_path / "lavis.json"
    lavis_file.write_text(json.dumps([{"image": f"val2017/{s.image.rsplit('/', 1)[-1]}", "caption": list(s.references)}
                                      for s in karpathy.samples]))
    lavis = load_caption_set(parse_data_arg(str(lavis_file)), "test", COCO_FIXTURE)
    coco_ids = _by_id(coco)
    assert {k: v for k, v in coco_ids.items() if k in _by_id(karpathy)} == _by_id(karpathy) == _by_id(lavis)
    assert lavis.images.missing_files([s.image for s in lavis.samples]) == []


def test_hf_dataset_with_column_mapping(tmp_path):
    import datasets

    annotations = coco_annotations()
    refs = {}
    for ann in annotations["annotations"]:
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    rows = {"cocoid": [], "image": [], "sentences": []}
    for image in annotations["images"][:3]:
        rows["cocoid"].append(image["id"])
        rows["image"].append(str(COCO_FIXTURE / "val2017" / image["file_name"]))
        rows["sentences"].append(refs[image["id"]])
    dataset = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    dataset.save_to_disk(str(tmp_path / "hf"))
    loaded = load_caption_set(parse_data_arg(f"hf:{tmp_path / 'hf'}"), "test", None,
                              {"image": "image", "captions": "sentences", "id": "cocoid"})
    assert [s.id for s in loaded.samples] == [str(i) for i in rows["cocoid"]]
    assert loaded.samples[0].references == tuple(rows["sentences"][0])
    assert loaded.images.open(loaded.samples[1].image).mode == "RGB"
    with pytest.raises(EvalkitError, match="no column 'caption'"):
        load_caption_set(parse_data_arg(f"hf:{tmp_path / 'hf'}"), "test", None, {"captions": "caption"})


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(EvalkitError, match="does not exist"):
        parse_data_arg(str(tmp_path / "nowhere"))
    with pytest.raises(EvalkitError, match="holds none of"):
        load_caption_set(parse_data_arg(str(tmp_path)), "test")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(EvalkitError, match="broken.json: not valid JSON"):
        load_caption_set(parse_data_arg(str(tmp_path / "broken.json")), "test")
    write_karpathy(tmp_path / "k")
    with pytest.raises(EvalkitError, match="no images in split 'train'.*splits present: test, val"):
        load_caption_set(parse_data_arg(str(tmp_path / "k")), "train")
