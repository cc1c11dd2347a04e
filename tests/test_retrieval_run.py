"""Retrieval runs end to end with a tiny ITM model, and the model-side ITC/ITM match transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, write_karpathy


@pytest.fixture(scope="module")
def tiny_itm(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_itm

    return build_tiny_itm(tmp_path_factory.mktemp("models") / "tiny-itm")


def test_features_and_itm_equal_the_transformers_forward(tiny_itm):
    from PIL import Image

    from evalkit.models.catalog import resolve_model
    from evalkit.models.blip2_retrieval import Blip2Retriever
    from evalkit.models.loading import load_checkpoint

    checkpoint = load_checkpoint(resolve_model(str(tiny_itm)), "cpu")
    retriever = Blip2Retriever(checkpoint)
    images = [Image.fromarray(np.random.RandomState(i).randint(0, 255, (40, 40, 3), dtype=np.uint8)) for i in range(2)]
    texts = ["a dog runs in the park", "two birds sit on a wire near the sea"]
    pixels = retriever.pixel_values(images)
    vision, image_feats = retriever.encode_images(pixels)
    text_feats = retriever.encode_texts(texts)
    ours_itc = torch.einsum("iqd,td->itq", image_feats, text_feats).max(-1).values
    tokens = retriever.tokenize(texts)
    with torch.inference_mode():
        for i in range(2):
            itc = checkpoint.model(pixel_values=pixels[i:i + 1], input_ids=tokens["input_ids"],
                                   attention_mask=tokens["attention_mask"], use_image_text_matching_head=False)
            torch.testing.assert_close(itc.logits_per_image[0], ours_itc[i])
            for j in range(2):
                itm = checkpoint.model(pixel_values=pixels[i:i + 1], input_ids=tokens["input_ids"][j:j + 1],
                                       attention_mask=tokens["attention_mask"][j:j + 1],
                                       use_image_text_matching_head=True)
                ours = retriever.itm_logits(vision[i:i + 1], tokens["input_ids"][j:j + 1],
                                            tokens["attention_mask"][j:j + 1])
                torch.testing.assert_close(itm.logits_per_image[0, 1], ours[0])


def _rank(row: np.ndarray, target: int) -> int:
    """0-based rank of candidate ``target`` when ``row`` is sorted by descending score; among equal scores the
    larger index first (LAVIS's argsort(...)[::-1] with a stable sort, as evalkit.metrics.retrieval_recall says)."""
    return int((row > row[target]).sum() + ((row == row[target]) & (np.arange(len(row)) > target)).sum())


def recalls_from_scores(i2t: np.ndarray, t2i: np.ndarray, captions_per_image: list[int]) -> dict[str, float]:
    """R@1/5/10 both ways and their means from the score matrices; texts are ordered image by image."""
    owner = [i for i, n in enumerate(captions_per_image) for _ in range(n)]
    assert len(owner) == i2t.shape[1] == t2i.shape[0]
    text_ranks = [min(_rank(i2t[i], j) for j, o in enumerate(owner) if o == i) for i in range(len(i2t))]
    image_ranks = [_rank(t2i[j], owner[j]) for j in range(len(owner))]
    out = {}
    for name, ranks in (("txt", text_ranks), ("img", image_ranks)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * sum(r < k for r in ranks) / len(ranks)
        out[f"{name}_r_mean"] = (out[f"{name}_r1"] + out[f"{name}_r5"] + out[f"{name}_r10"]) / 3
    out["r_mean"] = (out["txt_r_mean"] + out["img_r_mean"]) / 2
    return out


def test_retrieval_run_with_rerank_and_scores_export(tiny_itm, tmp_path, capsys):
    write_karpathy(tmp_path / "data")
    code, out, err = run_cli(["run", "retrieval-coco", "-m", str(tiny_itm), "--data", str(tmp_path / "data"),
                              "--results", str(tmp_path / "r"), "--k", "3", "--scores", "--image-size", "32", "-q"],
                             capsys)
    assert code == 0, err
    (run_json,) = (tmp_path / "r").glob("*/retrieval-coco/*/run.json")
    record = json.loads(run_json.read_text())
    assert record["protocol"]["rerank_k"] == 3 and record["details"]["n_texts"] == 30
    scores = np.load(run_json.parent / "scores_i2t.npy")
    assert scores.shape == (6, 30)
    assert ((scores > -100).sum(axis=1) >= 3).all()  # each image's top 3 re-scored
    # the recorded recalls are the ones the exported score matrices give
    lines = [json.loads(line) for line in (run_json.parent / "predictions.jsonl").read_text().splitlines()]
    expected = recalls_from_scores(scores, np.load(run_json.parent / "scores_t2i.npy"),
                                   [len(line["references"]) for line in lines])
    assert {name: entry["value"] for name, entry in record["metrics"].items()} == pytest.approx(expected, abs=1e-9)
    assert len({expected["txt_r1"], expected["txt_r10"], expected["img_r1"]}) > 1  # not all 0 or all 100
    assert (run_json.parent / "image_feats.pt").exists() and (run_json.parent / "text_feats.pt").exists()
    # ITC only: a different protocol, so a different run; it reuses nothing and needs no ITM
    code, _, err = run_cli(["run", "retrieval-coco", "-m", str(tiny_itm), "--data", str(tmp_path / "data"),
                            "--results", str(tmp_path / "r"), "--no-rerank", "--image-size", "32", "-q"], capsys)
    assert code == 0, err
    assert len(list((tmp_path / "r").glob("*/retrieval-coco/*/run.json"))) == 2


def test_generation_model_on_a_retrieval_task_is_refused(tiny_opt, tmp_path, capsys):
    code, _, err = run_cli(["run", "retrieval-coco", "-m", str(tiny_opt), "--data", str(tmp_path)], capsys)
    assert code == 2 and "cannot run" in err


def test_cached_image_features_are_reused_only_on_the_images_they_were_computed_from(tiny_itm, tmp_path, capsys):
    """A run killed after caching the image features but before journaling its predictions: the rerun reuses the
    cache on the same bytes (moved or touched), and refuses by name an image whose bytes changed."""
    import os
    import shutil

    write_karpathy(tmp_path / "data")
    args = ["run", "retrieval-coco", "-m", str(tiny_itm), "--data", str(tmp_path / "data"), "--results",
            str(tmp_path / "r"), "--no-rerank", "--image-size", "32", "--run-id", "one", "-q"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    (run_dir,) = (tmp_path / "r").glob("*/retrieval-coco/one")
    first = json.loads((run_dir / "run.json").read_text())

    def killed_before_journaling() -> None:
        for name in ("predictions.jsonl", "images.jsonl", "run.json"):
            (run_dir / name).unlink()

    killed_before_journaling()
    images = sorted((tmp_path / "data" / "val2017").glob("*.jpg"))
    os.utime(images[0], ns=(1, 1))  # touched, same bytes: reused
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    again = json.loads((run_dir / "run.json").read_text())
    assert again["runtime"]["images_encoded"] == 0 and again["metrics"] == first["metrics"]

    killed_before_journaling()
    shutil.copy(images[1], images[0])  # another picture under the same name
    code, _, err = run_cli(args, capsys)
    # refused by the first cache that holds it: the final scores (retrieval_scores.pt), else the features
    assert code == 2 and images[0].name in err and "retrieval_scores.pt" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (run_dir / "run.json").exists()
    code, _, err = run_cli(args + ["--overwrite"], capsys)
    assert code == 0, err
    assert json.loads((run_dir / "run.json").read_text())["runtime"]["images_encoded"] == 6


def test_a_cache_without_its_images_identity_is_recomputed(tmp_path):
    from evalkit.core.samples import Sample
    from evalkit.inference.retrieval_runner import cached_image_feats

    torch.save(torch.zeros(1, 2, 3), tmp_path / "image_feats.pt")  # written before caches recorded their images
    assert cached_image_feats(tmp_path / "image_feats.pt", [Sample("1", str(tmp_path / "a.jpg"))]) is None
    assert cached_image_feats(tmp_path / "absent.pt", []) is None
