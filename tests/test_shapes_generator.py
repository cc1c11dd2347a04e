"""Tests for the synthetic shapes benchmark generator (evalkit/demo/shapes.py)."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from evalkit.demo import shapes
from evalkit.demo.shapes import (
    BUNDLED_N_IMAGES,
    BUNDLED_SEED,
    BUNDLED_SPLIT,
    bundled_dir,
    generate_split,
    write_split,
)

OFFICIAL_FILES = (
    "captions_{s}.json",
    "dataset_shapes.json",
    "v2_OpenEnded_shapes_{s}_questions.json",
    "v2_shapes_{s}_annotations.json",
)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "README.md"}


def _load(root: Path, name: str):
    return json.loads((root / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def small_split(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes_small")
    split = generate_split("val", 40, seed=7)
    write_split(split, out)
    return split, out


def test_same_seed_identical_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_split(generate_split("val", 25, seed=3), a)
    write_split(generate_split("val", 25, seed=3), b)
    da, db = _tree_digest(a), _tree_digest(b)
    assert da == db
    assert len([k for k in da if k.startswith("images")]) == 25


def test_different_seeds_differ():
    a = generate_split("val", 20, seed=1)
    b = generate_split("val", 20, seed=2)
    assert [im.image.tobytes() for im in a.images] != [im.image.tobytes() for im in b.images]
    assert [im.captions for im in a.images] != [im.captions for im in b.images]


def test_generated_content_is_consistent():
    split = generate_split("train", 300, seed=11)
    assert len(split.images) == 300
    for im in split.images:
        assert im.image.size == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE) and im.image.mode == "RGB"
        assert 1 <= len(im.objects) <= 3
        assert len({o.shape for o in im.objects}) == len(im.objects)  # a shape type at most once
        assert len({(o.col, o.row) for o in im.objects}) == len(im.objects)  # own grid cell: no overlap
        assert len(im.captions) == 5 and len(set(im.captions)) == 5
        for c in im.captions:  # every caption names every shape with its colour
            for o in im.objects:
                assert f"{o.color} {o.shape}" in c
        # pixels: every shape's colour is visible around its centre
        px = im.image.load()
        for o in im.objects:
            r, g, b = px[int(o.cx), int(o.cy)]
            assert max(r, g, b) - min(r, g, b) > 80, (o, (r, g, b))
    answers = Counter(q.answer for q in split.questions)
    assert 0.35 < answers["yes"] / (answers["yes"] + answers["no"]) < 0.65


def test_eval_split_is_retrieval_well_posed():
    split = generate_split("test", 100, seed=5)
    sigs = [tuple(sorted((o.color, o.shape) for o in im.objects)) for im in split.images]
    assert len(set(sigs)) == len(sigs)
    with pytest.raises(ValueError):
        generate_split("test", 500, seed=5)


def test_official_caption_formats(small_split):
    split, out = small_split
    coco = _load(out, "captions_val.json")
    assert {"info", "images", "annotations"} <= set(coco)
    img_ids = [im["id"] for im in coco["images"]]
    assert len(img_ids) == len(set(img_ids)) == 40
    for im in coco["images"]:
        assert isinstance(im["id"], int)
        assert re.fullmatch(r"shapes_val_\d{6}\.png", im["file_name"])
        assert (out / "images" / im["file_name"]).is_file()
        assert im["height"] == im["width"] == shapes.IMAGE_SIZE
    ann_ids = [a["id"] for a in coco["annotations"]]
    assert len(ann_ids) == len(set(ann_ids))
    per_image = Counter(a["image_id"] for a in coco["annotations"])
    assert set(per_image) == set(img_ids) and set(per_image.values()) == {5}
    assert all(isinstance(a["caption"], str) and a["caption"] for a in coco["annotations"])

    karpathy = _load(out, "dataset_shapes.json")
    assert karpathy["dataset"] == "shapes"
    sentids = []
    for i, im in enumerate(karpathy["images"]):
        assert im["imgid"] == i and im["split"] == "val" and im["cocoid"] in set(img_ids)
        assert (out / im["filepath"] / im["filename"]).is_file()
        assert len(im["sentences"]) == 5 and [s["sentid"] for s in im["sentences"]] == im["sentids"]
        for s in im["sentences"]:
            assert s["imgid"] == i and s["tokens"] == shapes.caption_tokens(s["raw"])
        sentids += im["sentids"]
    assert len(sentids) == len(set(sentids)) == 200


def test_official_vqa_formats(small_split):
    split, out = small_split
    qs = _load(out, "v2_OpenEnded_shapes_val_questions.json")
    anns = _load(out, "v2_shapes_val_annotations.json")
    assert qs["task_type"] == "Open-Ended" and qs["data_subtype"] == "val"
    img_ids = {im["id"] for im in _load(out, "captions_val.json")["images"]}
    qids = [q["question_id"] for q in qs["questions"]]
    assert len(qids) == len(set(qids)) and len(qids) >= 3 * 40
    assert all(q["image_id"] in img_ids and q["question"].endswith("?") for q in qs["questions"])
    by_id = {a["question_id"]: a for a in anns["annotations"]}
    assert set(by_id) == set(qids)
    for a in anns["annotations"]:
        assert a["answer_type"] in {"yes/no", "number", "other"}
        assert a["question_type"] in {"how many", "what color is the", "is there a", "what"}
        assert len(a["answers"]) == 10
        assert [x["answer_id"] for x in a["answers"]] == list(range(1, 11))
        assert all(x["answer_confidence"] == "yes" for x in a["answers"])
        raw = Counter(x["answer"] for x in a["answers"])
        assert raw.most_common(1)[0][0] == a["multiple_choice_answer"]
        mca = a["multiple_choice_answer"]
        assert mca == mca.strip().lower() and not mca.endswith(".")


def _vqa_norm(ans: str) -> str:
    """Official VQA answer normalisation, reduced to what the generator produces."""
    ans = re.sub(r"(?!<=\d)(\.)(?!\d)", "", ans.strip())
    words = {"one": "1", "two": "2", "three": "3", "four": "4"}
    return " ".join(words.get(w, w) for w in ans.lower().split() if w not in {"a", "an", "the"})


def _vqa_acc(pred: str, answers: list[str]) -> float:
    if len(set(answers)) > 1:
        answers = [_vqa_norm(a) for a in answers]
        pred = _vqa_norm(pred)
    accs = [min(1.0, sum(o == pred for o in answers[:i] + answers[i + 1:]) / 3) for i in range(len(answers))]
    return sum(accs) / len(accs)


def test_human_answers_realistic_but_canonical_scores_full():
    split = generate_split("test", 100, seed=BUNDLED_SEED)
    n_varied = 0
    for q in split.questions:
        assert len(q.answers) == 10
        n_varied += len(set(q.answers)) > 1
        assert _vqa_acc(q.answer, q.answers) == 1.0  # canonical answer always gets full credit
        wrong = {"yes": "no", "no": "yes"}.get(q.answer, "xyz")
        assert _vqa_acc(wrong, q.answers) < 0.5
    assert n_varied > len(split.questions) // 3  # normalisation is exercised
    flat = [a for q in split.questions for a in q.answers]
    assert any(a in ("two", "three", "one") for a in flat)
    assert any(a.startswith(("a ", "an ", "the ")) for a in flat)
    assert any(a.endswith(".") for a in flat) and any(a[:1].isupper() for a in flat)


def test_bundled_split_matches_regeneration(tmp_path):
    root = bundled_dir()
    assert (root / "README.md").is_file()
    assert f"--seed {BUNDLED_SEED}" in (root / "README.md").read_text()
    write_split(generate_split(BUNDLED_SPLIT, BUNDLED_N_IMAGES, BUNDLED_SEED), tmp_path)
    assert _tree_digest(root) == _tree_digest(tmp_path)
    for f in OFFICIAL_FILES:
        assert (root / f.format(s=BUNDLED_SPLIT)).is_file()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total < 1_000_000
    caps = _load(root, f"captions_{BUNDLED_SPLIT}.json")
    assert len(caps["images"]) == BUNDLED_N_IMAGES and len(caps["annotations"]) == 5 * BUNDLED_N_IMAGES
    n_q = len(_load(root, f"v2_OpenEnded_shapes_{BUNDLED_SPLIT}_questions.json")["questions"])
    assert 300 <= n_q <= 400
