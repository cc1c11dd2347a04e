"""Recall@K exactly as LAVIS ``_report_metrics`` / BLIP ``itm_eval`` compute it.

Expected values below are worked out by hand in the comments, or come from an independent
re-implementation of LAVIS's per-row argsort loop written here in the test.
"""

from __future__ import annotations

import numpy as np
import pytest

from evalkit.core.errors import EvalkitError
from evalkit.metrics.retrieval_recall import (
    QueryRanks,
    per_query_ranks,
    recall_from_ranks,
    retrieval_recall,
)


# --------------------------------------------------------------------------- reference
def lavis_report_metrics(scores_i2t, scores_t2i, txt2img, img2txt, kind="stable"):
    """LAVIS's loop, restated. ``kind="stable"`` is the deterministic form of its argsort;
    ``kind=None`` uses numpy's default (unstable) sort exactly as LAVIS does."""

    def order(row):
        return (np.argsort(row) if kind is None else np.argsort(row, kind=kind))[::-1]

    t_ranks = np.zeros(scores_i2t.shape[0])
    for q, row in enumerate(scores_i2t):
        inds = order(row)
        best = 1e20
        for c in img2txt[q]:
            pos = np.where(inds == c)[0][0]
            best = min(best, pos)
        t_ranks[q] = best
    tr1 = 100.0 * len(np.where(t_ranks < 1)[0]) / len(t_ranks)
    tr5 = 100.0 * len(np.where(t_ranks < 5)[0]) / len(t_ranks)
    tr10 = 100.0 * len(np.where(t_ranks < 10)[0]) / len(t_ranks)

    i_ranks = np.zeros(scores_t2i.shape[0])
    for q, row in enumerate(scores_t2i):
        inds = order(row)
        i_ranks[q] = np.where(inds == txt2img[q])[0][0]
    ir1 = 100.0 * len(np.where(i_ranks < 1)[0]) / len(i_ranks)
    ir5 = 100.0 * len(np.where(i_ranks < 5)[0]) / len(i_ranks)
    ir10 = 100.0 * len(np.where(i_ranks < 10)[0]) / len(i_ranks)

    tr_mean = (tr1 + tr5 + tr10) / 3
    ir_mean = (ir1 + ir5 + ir10) / 3
    metrics = {
        "txt_r1": tr1,
        "txt_r5": tr5,
        "txt_r10": tr10,
        "txt_r_mean": tr_mean,
        "img_r1": ir1,
        "img_r5": ir5,
        "img_r10": ir10,
        "img_r_mean": ir_mean,
        "r_mean": (tr_mean + ir_mean) / 2,
    }
    return metrics, t_ranks, i_ranks


def random_annotations(rng, n_img, lo=1, hi=7):
    """Every image gets lo..hi-1 captions; texts are numbered image by image, then shuffled."""
    counts = rng.integers(lo, hi, size=n_img)
    owner = np.repeat(np.arange(n_img), counts)
    perm = rng.permutation(owner.shape[0])
    txt2img = owner[perm]
    img2txt = [sorted(np.flatnonzero(txt2img == i).tolist()) for i in range(n_img)]
    return img2txt, txt2img


# --------------------------------------------------------------------------- hand-worked
def test_ties_break_towards_larger_index():
    # 2 images, 4 texts; image 0 owns texts 0,1 and image 1 owns texts 2,3.
    img2txt = [[0, 1], [2, 3]]
    txt2img = [0, 0, 1, 1]
    i2t = np.array(
        [
            # image 0: text1 (gt) ties with text2 (not gt) at 0.9. Larger index first ->
            # order 2, 1, 0, 3: text1 at rank 1, text0 at rank 2 -> best rank 1.
            [0.5, 0.9, 0.9, 0.1],
            # image 1: all tied -> order 3, 2, 1, 0: text3 (gt) at rank 0.
            [0.3, 0.3, 0.3, 0.3],
        ]
    )
    t2i = np.array(
        [
            [0.2, 0.2],  # text0 -> image0; tie -> order 1, 0 -> rank 1
            [0.7, 0.1],  # text1 -> image0; rank 0
            [0.4, 0.4],  # text2 -> image1; tie -> order 1, 0 -> rank 0
            [0.9, 0.8],  # text3 -> image1; rank 1
        ]
    )
    ranks = per_query_ranks(i2t, t2i, img2txt, txt2img)
    assert isinstance(ranks, QueryRanks)
    assert ranks.txt_ranks.tolist() == [1, 0]
    assert ranks.img_ranks.tolist() == [1, 0, 0, 1]

    m = retrieval_recall(i2t, t2i, img2txt, txt2img)
    # txt: ranks [1, 0] -> R@1 = 50, R@5 = R@10 = 100; mean = 250/3. Same for img.
    assert m["txt_r1"] == 50.0 and m["txt_r5"] == 100.0 and m["txt_r10"] == 100.0
    assert m["img_r1"] == 50.0 and m["img_r5"] == 100.0 and m["img_r10"] == 100.0
    assert m["txt_r_mean"] == pytest.approx(250 / 3)
    assert m["img_r_mean"] == pytest.approx(250 / 3)
    assert m["r_mean"] == pytest.approx(250 / 3)
    assert set(m) == {
        "txt_r1", "txt_r5", "txt_r10", "txt_r_mean",
        "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean",
    }
    # The deterministic LAVIS form agrees on every number.
    ref, t_ref, i_ref = lavis_report_metrics(i2t, t2i, txt2img, img2txt)
    assert m == ref
    assert t_ref.tolist() == [1, 0] and i_ref.tolist() == [1, 0, 0, 1]


def test_five_and_six_captions_all_count():
    # Image 0 owns texts 0..4 (5 captions); image 1 owns texts 5..10 (6 captions).
    img2txt = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10]]
    txt2img = [0] * 5 + [1] * 6
    i2t = np.array(
        [
            # image 0: the 6 foreign texts 5..10 score 0.6..1.1, its own 0.1..0.5.
            # order 10,9,8,7,6,5,4,... -> best own caption (text 4) at rank 6:
            # misses R@1 and R@5, hits R@10.
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1],
            # image 1: its 6th caption (text 10) scores highest -> rank 0. Someone who only
            # looked at the first 5 captions (texts 5..9) would get rank 6 (after text 10 and
            # the five tied foreign texts at 1.0).
            [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0],
        ]
    )
    # Text queries: every text ranks its own image first except text 3, which ranks it last.
    t2i = np.zeros((11, 2))
    for j, i in enumerate(txt2img):
        t2i[j, i] = 1.0
    t2i[3] = [0.0, 1.0]
    ranks = per_query_ranks(i2t, t2i, img2txt, txt2img)
    assert ranks.txt_ranks.tolist() == [6, 0]
    assert ranks.img_ranks.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]
    m = retrieval_recall(i2t, t2i, img2txt, txt2img)
    assert (m["txt_r1"], m["txt_r5"], m["txt_r10"]) == (50.0, 50.0, 100.0)
    # 10 of 11 texts at rank 0, one at rank 1 (= last of 2 images).
    assert m["img_r1"] == 100.0 * 10 / 11
    assert m["img_r5"] == 100.0 and m["img_r10"] == 100.0
    assert m == lavis_report_metrics(i2t, t2i, txt2img, img2txt)[0]


def test_text_whose_image_is_ranked_last_and_r10_boundary():
    # 12 images, one caption each (text j belongs to image j).
    n = 12
    img2txt = [[j] for j in range(n)]
    txt2img = list(range(n))
    i2t = np.eye(n)  # every image finds its caption first
    t2i = np.eye(n)
    # text 0 ranks its image last: image 0 gets the only score below the others' 0.5.
    t2i[0] = 0.5
    t2i[0, 0] = -1.0  # rank 11 -> misses R@10
    # text 1: its image at 0-based rank 9 (9 images strictly above) -> still inside R@10.
    t2i[1] = 0.0
    t2i[1, 2:11] = 1.0
    # text 2: 10 images strictly above image 2, and image 11 tied with it at 0.0 -> rank 11.
    t2i[2] = 0.0
    t2i[2, [0, 1, 3, 4, 5, 6, 7, 8, 9, 10]] = 1.0
    ranks = per_query_ranks(i2t, t2i, img2txt, txt2img)
    # text 1: images above = 2..10 (9 of them); tied at 0.0 are images 0, 11 and itself;
    # image 11 has a larger index so it ranks ahead too -> 9 + 1 = 10.
    assert ranks.img_ranks[0] == 11
    assert ranks.img_ranks[1] == 10
    assert ranks.img_ranks[2] == 11  # 10 above, plus image 11 tied at 0.0 with larger index
    assert ranks.img_ranks[3:].tolist() == [0] * 9
    assert ranks.txt_ranks.tolist() == [0] * n
    # Make text 1 land at exactly rank 9: lift it above image 11.
    t2i[1, 1] = 0.5
    assert per_query_ranks(i2t, t2i, img2txt, txt2img).img_ranks[1] == 9
    m = retrieval_recall(i2t, t2i, img2txt, txt2img)
    # img ranks: [11, 9, 11, 0 x 9] -> R@1 = R@5 = 9/12, R@10 = 10/12.
    assert m["img_r1"] == 100.0 * 9 / 12
    assert m["img_r5"] == 100.0 * 9 / 12
    assert m["img_r10"] == 100.0 * 10 / 12
    assert m["txt_r1"] == 100.0
    assert m == lavis_report_metrics(i2t, t2i, txt2img, img2txt)[0]


def test_unreranked_fill_ties_follow_the_index_rule():
    # Scores as rerank_with_itm leaves them with k=1: one re-ranked entry per row, rest -100.
    img2txt = [[0], [1], [2]]
    txt2img = [0, 1, 2]
    i2t = np.full((3, 3), -100.0)
    i2t[0, 1] = 3.0  # image 0's caption (text 0) not shortlisted: -100 tied with text 2
    i2t[1, 1] = 2.0
    i2t[2, 0] = 1.0  # image 2's caption (text 2) tied with text 1 at -100
    t2i = i2t.T.copy()
    ranks = per_query_ranks(i2t, t2i, img2txt, txt2img)
    # image 0: order text1 (3.0), then -100 ties by larger index: text2, text0 -> rank 2.
    # image 2: order text0 (1.0), then text2, text1 -> text 2 at rank 1.
    assert ranks.txt_ranks.tolist() == [2, 0, 1]
    # t2i rows: text0 = [-100, -100, 1.0] -> order image2, image1, image0 -> rank 2;
    # text1 = [3.0, 2.0, -100] -> image1 at rank 1; text2 = [-100]*3 -> image2 rank 0.
    assert ranks.img_ranks.tolist() == [2, 1, 0]


def test_recall_from_ranks():
    ranks = np.array([0, 4, 5, 9, 10])
    # < 1: {0}; < 5: {0, 4}; < 10: {0, 4, 5, 9}
    assert recall_from_ranks(ranks, 1) == 20.0
    assert recall_from_ranks(ranks, 5) == 40.0
    assert recall_from_ranks(ranks, 10) == 80.0
    assert recall_from_ranks(ranks, 11) == 100.0
    with pytest.raises(EvalkitError):
        recall_from_ranks(ranks, 0)
    with pytest.raises(EvalkitError):
        recall_from_ranks([], 1)


def test_custom_ks():
    img2txt = [[0], [1]]
    txt2img = [0, 1]
    i2t = np.array([[1.0, 0.0], [1.0, 0.0]])  # image 1's caption at rank 1
    t2i = np.eye(2)
    m = retrieval_recall(i2t, t2i, img2txt, txt2img, ks=(1, 2))
    assert m["txt_r1"] == 50.0 and m["txt_r2"] == 100.0 and m["txt_r_mean"] == 75.0
    assert m["img_r1"] == 100.0 and m["img_r2"] == 100.0
    assert m["r_mean"] == (75.0 + 100.0) / 2
    assert "txt_r10" not in m


# --------------------------------------------------------------------------- differential
@pytest.mark.parametrize("seed", range(6))
def test_matches_lavis_loop_on_random_scores_with_ties(seed):
    rng = np.random.default_rng(seed)
    n_img = int(rng.integers(2, 40))
    img2txt, txt2img = random_annotations(rng, n_img)
    n_txt = len(txt2img)
    # Few distinct values -> many ties, plus LAVIS-style -100 fills.
    i2t = rng.integers(0, 4, size=(n_img, n_txt)).astype(np.float32)
    t2i = rng.integers(0, 4, size=(n_txt, n_img)).astype(np.float32)
    i2t[rng.random(i2t.shape) < 0.3] = -100.0
    t2i[rng.random(t2i.shape) < 0.3] = -100.0
    ref, t_ref, i_ref = lavis_report_metrics(i2t, t2i, txt2img, img2txt)
    ranks = per_query_ranks(i2t, t2i, img2txt, txt2img)
    np.testing.assert_array_equal(ranks.txt_ranks, t_ref)
    np.testing.assert_array_equal(ranks.img_ranks, i_ref)
    assert retrieval_recall(i2t, t2i, img2txt, txt2img) == ref  # bitwise-equal floats


@pytest.mark.parametrize("seed", range(4))
def test_matches_literal_lavis_argsort_without_ties(seed):
    # Tie-free scores: LAVIS's default (unstable) argsort gives the same answer everywhere.
    rng = np.random.default_rng(100 + seed)
    n_img = int(rng.integers(20, 60))
    img2txt, txt2img = random_annotations(rng, n_img, 4, 7)
    n_txt = len(txt2img)
    # Distinct integers; the ground truth is lifted by a half-integer amount, so all
    # entries of a matrix stay distinct while the ground truth tends to rank high.
    i2t = rng.permutation(n_img * n_txt).reshape(n_img, n_txt).astype(np.float32)
    t2i = rng.permutation(n_img * n_txt).reshape(n_txt, n_img).astype(np.float32)
    lift = n_img * n_txt / 2 + 0.5 - (n_img * n_txt) % 2 / 2
    for i, caps in enumerate(img2txt):
        i2t[i, caps] += lift
    t2i[np.arange(n_txt), txt2img] += lift
    assert len(np.unique(i2t)) == i2t.size and len(np.unique(t2i)) == t2i.size
    ref, t_ref, i_ref = lavis_report_metrics(i2t, t2i, txt2img, img2txt, kind=None)
    ranks = per_query_ranks(i2t, t2i, img2txt, txt2img)
    np.testing.assert_array_equal(ranks.txt_ranks, t_ref)
    np.testing.assert_array_equal(ranks.img_ranks, i_ref)
    assert retrieval_recall(i2t, t2i, img2txt, txt2img) == ref


def test_block_boundaries_do_not_matter(monkeypatch):
    import evalkit.metrics.retrieval_recall as rr

    rng = np.random.default_rng(7)
    img2txt, txt2img = random_annotations(rng, 30)
    n_txt = len(txt2img)
    i2t = rng.integers(0, 3, size=(30, n_txt)).astype(np.float64)
    t2i = rng.integers(0, 3, size=(n_txt, 30)).astype(np.float64)
    full = per_query_ranks(i2t, t2i, img2txt, txt2img)
    monkeypatch.setattr(rr, "_BLOCK_ELEMENTS", 1)  # one row per block
    tiny = per_query_ranks(i2t, t2i, img2txt, txt2img)
    np.testing.assert_array_equal(full.txt_ranks, tiny.txt_ranks)
    np.testing.assert_array_equal(full.img_ranks, tiny.img_ranks)


def test_accepts_torch_tensors():
    import torch

    i2t = np.array([[0.2, 0.9], [0.8, 0.1]])
    m1 = retrieval_recall(i2t, i2t.T, [[0], [1]], [0, 1])
    m2 = retrieval_recall(torch.tensor(i2t), torch.tensor(i2t.T), [[0], [1]], torch.tensor([0, 1]))
    assert m1 == m2
    assert m1["txt_r1"] == 0.0  # image 0 prefers text 1, image 1 prefers text 0


# --------------------------------------------------------------------------- validation
def _ok():
    return np.zeros((2, 3)), np.zeros((3, 2)), [[0, 1], [2]], [0, 0, 1]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda a: (a[0], np.zeros((2, 3)), a[2], a[3]), "t2i_scores has shape"),
        (lambda a: (np.zeros(3), a[1], a[2], a[3]), "2-D"),
        (lambda a: (a[0], a[1], a[2], [0, 0, 2]), "text 2 maps to image 2"),
        (lambda a: (a[0], a[1], a[2], [0, -1, 1]), "text 1 maps to image -1"),
        (lambda a: (a[0], a[1], a[2], [0, 0]), "txt2img has 2 entries"),
        (lambda a: (a[0], a[1], [[0, 1, 2], []], [0, 0, 0]), "image 1 has no captions"),
        (lambda a: (a[0], a[1], [[0, 1], [3]], a[3]), "caption 3"),
        (lambda a: (a[0], a[1], [[0, 1]], a[3]), "img2txt has 1 entries"),
        (lambda a: (a[0], a[1], [[0], [2]], a[3]), "text 1 belongs to image 0"),
        (lambda a: (a[0], a[1], [[0, 1], [1, 2]], a[3]), "image 1 lists text 1"),
        (lambda a: (np.full((2, 3), np.nan), a[1], a[2], a[3]), "NaN"),
        (lambda a: (a[0], a[1], [[0.5, 1], [2]], a[3]), "integer"),
    ],
)
def test_bad_input_is_a_one_line_evalkit_error(mutate, message):
    with pytest.raises(EvalkitError) as info:
        retrieval_recall(*mutate(_ok()))
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_bad_ks():
    with pytest.raises(EvalkitError):
        retrieval_recall(*_ok(), ks=())
    with pytest.raises(EvalkitError):
        retrieval_recall(*_ok(), ks=(1, 0))
