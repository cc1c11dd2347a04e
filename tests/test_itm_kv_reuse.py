"""ITM with each image's cross-attention keys/values computed once per batch is bit-identical to the plain
per-pair Q-Former forward (transformers' own), on tiny models, with repeated images, mixed text lengths and
padding; and a retrieval run gives the same score matrices either way."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, write_karpathy
from evalkit.models import blip2_retrieval
from evalkit.models.qformer_kv_reuse import RowReusingLinear, reused_image_kv, runs_of_equal_rows

TEXTS = ["a dog", "two birds sit on a wire near the sea at dusk", "red", "a small blue square next to a big circle",
         "a cat", "green triangle"]


@pytest.fixture(scope="module")
def tiny_itm(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_itm

    return build_tiny_itm(tmp_path_factory.mktemp("models") / "tiny-itm")


def _retriever(path: str):
    from evalkit.models.catalog import resolve_model
    from evalkit.models.loading import load_checkpoint

    return blip2_retrieval.Blip2Retriever(load_checkpoint(resolve_model(path), "cpu"))


def _pairs(retriever, n_images: int, image_of_pair: list[int], text_of_pair: list[int]):
    """(vision embeddings per pair, input ids, attention mask) for the given pairs of random images."""
    torch.manual_seed(1)
    size = retriever.pixel_values.image_size
    vision, _ = retriever.encode_images(torch.randn(n_images, 3, size, size))
    tokens = retriever.tokenize(TEXTS)
    text_of_pair = torch.tensor(text_of_pair)
    return vision[torch.tensor(image_of_pair)], tokens["input_ids"][text_of_pair], tokens["attention_mask"][text_of_pair]


# grouped by image as itm_rerank sends them, a lone image, and an image that comes back after another
IMAGES = [0, 0, 0, 0, 1, 2, 2, 2, 0, 0, 3, 3, 3, 3, 3]
TEXT_IDS = [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 1, 2]


@pytest.mark.parametrize("model", ["tiny", "blip2-tiny-itm"])
def test_reused_keys_and_values_give_bit_identical_itm_logits(model, tiny_itm):
    retriever = _retriever(str(tiny_itm) if model == "tiny" else model)
    embeds, ids, mask = _pairs(retriever, 4, IMAGES, TEXT_IDS)
    assert (mask == 0).any()  # padding present
    plain = retriever.itm_logits(embeds, ids, mask, reuse_image_kv=False)
    calls = []
    original = RowReusingLinear.forward
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RowReusingLinear, "forward", lambda self, x: calls.append(x.shape[0]) or original(self, x))
        reused = retriever.itm_logits(embeds, ids, mask)
    assert calls and all(rows == len(IMAGES) for rows in calls)  # the reuse path really ran
    assert torch.equal(reused, plain)
    # the modules are restored afterwards
    for layer in retriever.model.qformer.encoder.layer:
        assert isinstance(layer.crossattention.attention.key, torch.nn.Linear)


def test_every_other_layer_cross_attention_like_the_real_q_former():
    """Cross-attention every 2nd layer (as in BLIP-2), straight on transformers' Q-Former."""
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    torch.manual_seed(0)
    config = Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=2,
                                encoder_hidden_size=24, cross_attention_frequency=2, vocab_size=50,
                                use_qformer_text_input=True)
    qformer = Blip2QFormerModel(config).eval()
    images = torch.randn(3, 17, 24)[torch.tensor(IMAGES[:10]) % 3]
    queries = torch.randn(10, 4 + 7, 32)
    mask = torch.ones(10, 11, dtype=torch.long)
    mask[::3, 8:] = 0

    def forward():
        with torch.inference_mode():
            return qformer(query_embeds=queries, query_length=4, attention_mask=mask, encoder_hidden_states=images,
                           encoder_attention_mask=torch.ones(images.shape[:-1], dtype=torch.long)).last_hidden_state

    plain = forward()
    with reused_image_kv(qformer, images):
        assert sum(isinstance(m, RowReusingLinear) for m in qformer.modules()) == 4  # key+value of layers 0 and 2
        reused = forward()
    assert torch.equal(reused, plain)


def test_runs_of_equal_rows_compare_bits():
    rows = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [-0.0, 0.0], [1.0, 2.0]])
    first, run = runs_of_equal_rows(rows)
    assert first.tolist() == [0, 2, 3, 4] and run.tolist() == [0, 0, 1, 2, 3]
    assert torch.equal(rows[first][run], rows)


def test_retrieval_run_scores_are_identical_with_and_without_reuse(tiny_itm, tmp_path, capsys):
    write_karpathy(tmp_path / "data")

    def run(results: str) -> tuple[np.ndarray, np.ndarray, dict]:
        code, _, err = run_cli(["run", "retrieval-coco", "-m", str(tiny_itm), "--data", str(tmp_path / "data"),
                                "--results", str(tmp_path / results), "--k", "30", "--scores", "--image-size", "32",
                                "-q"], capsys)
        assert code == 0, err
        (run_json,) = (tmp_path / results).glob("*/retrieval-coco/*/run.json")
        return (np.load(run_json.parent / "scores_i2t.npy"), np.load(run_json.parent / "scores_t2i.npy"),
                json.loads(run_json.read_text())["metrics"])

    calls = []
    original = RowReusingLinear.forward
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RowReusingLinear, "forward", lambda self, x: calls.append(x.shape[0]) or original(self, x))
        reused = run("reused")
    assert calls  # the run's ITM batches repeat images, so the reuse path ran
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(blip2_retrieval, "reused_image_kv", lambda qformer, embeds: contextlib.nullcontext())
        plain = run("plain")
    assert np.array_equal(reused[0], plain[0]) and np.array_equal(reused[1], plain[1])
    assert reused[2] == plain[2]
