"""Tests of evalkit.data.coco_caption_files: official-format files, checks, official numbers."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from evalkit.data import coco_caption_files as ccf
from evalkit.core.errors import EvalkitError
from evalkit.metrics.caption_metrics import OFFICIAL_KEYS
from official_coco_eval import official_coco_eval

FIXTURES = Path(__file__).parent / "fixtures" / "karpathy_refs"
ANNOTATIONS = FIXTURES / "annotations.json.gz"
PREDICTIONS = FIXTURES / "predictions.json.gz"
needs_java = pytest.mark.usefixtures("java")  # conftest: a missing Java fails these tests
METRICS = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]


def read_gz(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


@needs_java
def test_full_karpathy_test_equals_official_golden():
    """All 4,982 images vs the numbers of the official COCO path (see make_fixtures.py)."""
    golden = json.loads((FIXTURES / "official_scores.json").read_text())
    scores = ccf.score_caption_files(ANNOTATIONS, PREDICTIONS)
    assert scores.n_images == golden["n_images"] == 4982
    assert list(scores.corpus) == METRICS
    for name in METRICS:
        assert scores.corpus[name] == pytest.approx(100 * golden["eval"][OFFICIAL_KEYS[name]], rel=1e-12, abs=0), name
    assert len(scores.per_image) == 4982
    assert "SPICE" in scores.skipped or "SPICE" in scores.corpus
    kept, total = scores.meteor_paraphrase_entries  # METEOR read a paraphrase table cut to these captions
    assert 0 < kept < total / 10


@needs_java
def test_subset_equals_official_subset_evaluation(tmp_path):
    """allow_subset=True on 500 predicted images == COCOEvalCap with params['image_id'] = cocoRes.getImgIds()."""
    annotations = read_gz(ANNOTATIONS)
    predictions = read_gz(PREDICTIONS)
    subset = predictions[::9][:500]
    subset_path = write_json(tmp_path / "subset.json", subset)
    with pytest.raises(EvalkitError, match=r"4482 of 4982 annotated images have no prediction"):
        ccf.score_caption_files(ANNOTATIONS, subset_path)
    scores = ccf.score_caption_files(ANNOTATIONS, subset_path, allow_subset=True)

    evaluator = official_coco_eval(annotations, subset, only_result_images=True)
    assert scores.n_images == 500
    assert list(scores.per_image) == list(evaluator.imgToEval)  # same images, same (annotation) order
    for name in METRICS:
        key = OFFICIAL_KEYS[name]
        assert scores.corpus[name] == pytest.approx(100 * evaluator.eval[key], rel=1e-12, abs=0), name
        for i, per in scores.per_image.items():
            assert per[name] == pytest.approx(100 * evaluator.imgToEval[i][key], rel=1e-12, abs=1e-12), (i, name)


def test_loaders_read_fixture():
    refs = ccf.load_caption_annotations(ANNOTATIONS)
    preds = ccf.load_caption_predictions(PREDICTIONS)
    assert len(refs) == len(preds) == 4982
    assert next(iter(refs)) == 391895
    assert refs[391895][0] == "A man with a red helmet on a small moped on a dirt road."
    assert all(len(c) >= 5 for c in refs.values())
    assert set(preds) == set(refs)


def test_plain_json_and_empty_caption(tmp_path):
    ann = write_json(tmp_path / "a.json", {"images": [{"id": 5}, {"id": 3}],
                                           "annotations": [{"image_id": 3, "caption": "x"}, {"image_id": 5, "caption": "y"},
                                                           {"image_id": 3, "caption": "z"}]})
    assert ccf.load_caption_annotations(ann) == {5: ["y"], 3: ["x", "z"]}
    assert list(ccf.load_caption_annotations(ann)) == [5, 3]  # order of "images"
    pred = write_json(tmp_path / "p.json", [{"image_id": 3, "caption": "", "score": 1.0}])
    assert ccf.load_caption_predictions(pred) == {3: ""}


# ---- loader errors: every message is one line and names the file -----------------------------

ANNOTATION_ERRORS = [
    ("not json {", r"is not valid JSON: Expecting value \(line 1, column 1\)"),
    ([], "must be a JSON object with 'images' and 'annotations' lists"),
    ({"annotations": []}, "must be a JSON object with 'images' and 'annotations' lists"),
    ({"images": [{"id": 1}, {"name": "x"}], "annotations": []}, r"images\[1\] is not an object with an 'id'"),
    ({"images": [{"id": "7"}], "annotations": []}, r"images\[0\]\.id must be an integer, got the string '7'"),
    ({"images": [{"id": 1}, {"id": 1}], "annotations": []}, r"images\[1\] repeats image id 1"),
    ({"images": [{"id": 1}], "annotations": [{"image_id": 1}]}, r"annotations\[0\] is not an object with 'image_id' and 'caption'"),
    ({"images": [{"id": 1}], "annotations": [{"image_id": 1.0, "caption": "a"}]}, r"annotations\[0\]\.image_id must be an integer"),
    ({"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": 3}]}, r"annotations\[0\]\.caption is not a string"),
    ({"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "a"}, {"image_id": 9, "caption": "b"}]},
     r"1 caption\(s\) refer to 1 image id\(s\) missing from 'images' \(first: 9\)"),
    ({"images": [{"id": 1}, {"id": 2}], "annotations": [{"image_id": 1, "caption": "a"}]}, r"1 image\(s\) have no caption \(first: 2\)"),
    ({"images": [], "annotations": []}, "has no images"),
]


@pytest.mark.parametrize("content, message", ANNOTATION_ERRORS)
def test_annotation_errors(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(EvalkitError, match=message) as info:
        ccf.load_caption_annotations(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


PREDICTION_ERRORS = [
    ('[{"image_id": 1, "caption": "a"}', r"is not valid JSON: Expecting ',' delimiter"),
    ({"image_id": 1, "caption": "a"}, "must be a JSON list of"),
    ([], "contains no predictions"),
    ([{"image_id": 1, "caption": "a"}, {"image_id": 2}], r"entry \[1\] is not an object with 'image_id' and 'caption'"),
    ([{"image_id": 1, "caption": "a"}, "b"], r"entry \[1\] is not an object"),
    ([{"image_id": "1", "caption": "a"}], r"entry \[0\] image_id must be an integer, got the string '1'"),
    ([{"image_id": True, "caption": "a"}], r"entry \[0\] image_id must be an integer, got bool"),
    ([{"image_id": 1, "caption": None}], r"entry \[0\] caption must be a string, got NoneType"),
    ([{"image_id": 1, "caption": "a"}, {"image_id": 2, "caption": "b"}, {"image_id": 1, "caption": "c"}],
     r"1 duplicated image_id\(s\).*first: 1 \(entries \[0\] and \[2\]\)"),
]


@pytest.mark.parametrize("content, message", PREDICTION_ERRORS)
def test_prediction_errors(tmp_path, content, message):
    path = tmp_path / "pred.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(EvalkitError, match=message) as info:
        ccf.load_caption_predictions(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(EvalkitError, match=r"caption annotation file not found: .*nope\.json"):
        ccf.load_caption_annotations(tmp_path / "nope.json")
    with pytest.raises(EvalkitError, match=r"caption prediction file not found: .*nope\.json"):
        ccf.score_caption_files(ANNOTATIONS, tmp_path / "nope.json")
    bad_gz = tmp_path / "bad.json.gz"
    bad_gz.write_bytes(b"not gzip at all")
    with pytest.raises(EvalkitError, match=r"bad\.json\.gz cannot be read: BadGzipFile"):
        ccf.load_caption_predictions(bad_gz)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('[{"image_id": 1, "caption": "caf\u00e9"}]'.encode("latin-1"))
    with pytest.raises(EvalkitError, match=r"latin1\.json cannot be read: UnicodeDecodeError"):
        ccf.load_caption_predictions(latin1)


def test_prediction_ids_not_in_annotations(tmp_path):
    preds = [{"image_id": i, "caption": "a"} for i in (391895, 11, 12, 13, 14, 15, 16)]
    path = write_json(tmp_path / "p.json", preds)
    with pytest.raises(EvalkitError, match=r"6 image_id\(s\) are not in the annotations \(first: 11, 12, 13, 14, 15, \.\.\.\)"):
        ccf.score_caption_files(ANNOTATIONS, path)
    with pytest.raises(EvalkitError, match="not in the annotations"):
        ccf.score_caption_files(ANNOTATIONS, path, allow_subset=True)


def test_missing_predictions_need_allow_subset(tmp_path):
    path = write_json(tmp_path / "p.json", [{"image_id": 391895, "caption": "a man on a moped"}])
    with pytest.raises(EvalkitError, match=r"4981 of 4982 annotated images have no prediction \(first: 60623, .*allow_subset=True"):
        ccf.score_caption_files(ANNOTATIONS, path)
    refs = ccf.load_caption_annotations(ANNOTATIONS)
    selected = ccf.select_scored_images(refs, {391895: "x", 60623: "y"}, allow_subset=True)
    assert list(selected) == [391895, 60623] and selected[60623] == refs[60623]


@needs_java
def test_cli_names_its_own_flag_for_a_subset_and_scores_it(tmp_path, capsys):
    """The error a command-line user sees names --allow-subset; with it, the subset equals the library's subset score."""
    from conftest import run_cli

    subset_path = write_json(tmp_path / "subset.json", read_gz(PREDICTIONS)[::50][:60])
    annotations = write_json(tmp_path / "annotations.json", read_gz(ANNOTATIONS))
    args = ["score", "coco-caption", "--annotations", str(annotations), "--predictions", str(subset_path), "--json"]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "--allow-subset" in err and len(err.strip().splitlines()) == 1
    code, out, err = run_cli(args + ["--allow-subset"], capsys)
    assert code == 0, err
    expected = ccf.score_caption_files(annotations, subset_path, allow_subset=True)
    assert json.loads(out)["metrics"] == pytest.approx(expected.corpus) and json.loads(out)["n_images"] == 60
