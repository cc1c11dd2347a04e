"""Recall@K for image-text retrieval, computed as LAVIS / BLIP report it.

Reference: ``RetrievalTask._report_metrics`` in ``lavis/tasks/retrieval.py`` and ``itm_eval``
in BLIP's ``train_retrieval.py`` (the two are the same procedure). This is an independent,
vectorised implementation of the same rules:

* Text retrieval (image queries, ``txt_r*``): rank the texts of row ``i`` of ``i2t_scores``
  by descending score; the image's rank is the best (smallest) 0-based rank of any of its
  ground-truth captions ``img2txt[i]`` (COCO images have 5 or more captions; all count).
* Image retrieval (text queries, ``img_r*``): rank the images of row ``j`` of ``t2i_scores``;
  the text's rank is the 0-based rank of its image ``txt2img[j]``.
* ``R@K = 100 * #(rank < K) / #queries``; ``txt_r_mean`` and ``img_r_mean`` are the means over
  ``ks``; ``r_mean = (txt_r_mean + img_r_mean) / 2``. The arithmetic is done in the same order
  as LAVIS, so for ``ks=(1, 5, 10)`` the floats are identical to LAVIS's.

Tie-breaking
------------
LAVIS ranks with ``np.argsort(score)[::-1]``: an ascending sort, reversed. ``np.argsort`` with
its default ``kind='quicksort'`` is not stable, so the order of exactly tied scores in LAVIS
is an artefact of the numpy build and CPU (introsort, or the AVX2 / AVX-512 sorting networks
numpy >= 1.25 / 2.0 dispatch to): it differs between machines and even between rows. This
module replicates LAVIS's expression with a *stable* ascending sort, which is deterministic::

    rank(j) = #{c : s[c] > s[j]} + #{c : s[c] == s[j] and c > j}

i.e. among tied candidates the one with the larger index ranks first (the stable ascending
order of ties is by increasing index; the reversal puts the largest index first). On tie-free
score rows the result equals LAVIS's on every platform. Ties do occur in practice among the
un-re-ranked candidates (all filled with -100); they only matter for ranks beyond the
re-ranking shortlist, i.e. never for R@1/5/10 when k_test >= 10.

NaN scores are rejected (LAVIS's argsort would put NaN first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from evalkit.core.errors import EvalkitError

__all__ = ["QueryRanks", "per_query_ranks", "recall_from_ranks", "retrieval_recall"]

# Upper bound on the elements of one temporary [rows, candidates] comparison block.
_BLOCK_ELEMENTS = 1 << 22


class QueryRanks(NamedTuple):
    """0-based ranks of the ground truth for every query (0 = retrieved first)."""

    #: ``[n_img]``: for each image query, the best rank of any of its captions (text retrieval).
    txt_ranks: np.ndarray
    #: ``[n_txt]``: for each text query, the rank of its image (image retrieval).
    img_ranks: np.ndarray


def _as_array(name: str, values: Any, what: str) -> np.ndarray:
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor
        values = values.detach().cpu().numpy()
    try:
        return np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise EvalkitError(f"{name} is not {what}: {exc}") from exc


def _as_score_matrix(name: str, scores: Any) -> np.ndarray:
    arr = _as_array(name, scores, "an array of scores")
    if arr.ndim != 2:
        raise EvalkitError(f"{name} must be a 2-D score matrix, got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise EvalkitError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise EvalkitError(f"{name} contains NaN scores")
    return arr


def _as_index_vector(name: str, values: Any) -> np.ndarray:
    arr = _as_array(name, values, "a list of integer indices")
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise EvalkitError(f"{name} must be a flat list of integer indices")
    return arr.astype(np.int64, copy=False)


def _validate(
    i2t_scores: Any,
    t2i_scores: Any,
    img2txt: Sequence[Iterable[int]],
    txt2img: Any,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    i2t = _as_score_matrix("i2t_scores", i2t_scores)
    t2i = _as_score_matrix("t2i_scores", t2i_scores)
    n_img, n_txt = i2t.shape
    if t2i.shape != (n_txt, n_img):
        raise EvalkitError(
            f"t2i_scores has shape {t2i.shape}, expected (n_txt, n_img) = {(n_txt, n_img)} "
            f"to match i2t_scores {i2t.shape}"
        )
    if n_img == 0 or n_txt == 0:
        raise EvalkitError(f"empty retrieval set: {n_img} images, {n_txt} texts")
    if isinstance(img2txt, (str, bytes)) or not hasattr(img2txt, "__len__"):
        raise EvalkitError("img2txt must be a list with one list of caption indices per image")
    if len(img2txt) != n_img:
        raise EvalkitError(f"img2txt has {len(img2txt)} entries but there are {n_img} images")
    t2img = _as_index_vector("txt2img", txt2img)
    if t2img.shape[0] != n_txt:
        raise EvalkitError(f"txt2img has {t2img.shape[0]} entries but there are {n_txt} texts")
    bad = np.flatnonzero((t2img < 0) | (t2img >= n_img))
    if bad.size:
        j = int(bad[0])
        raise EvalkitError(
            f"text {j} maps to image {int(t2img[j])}, outside 0..{n_img - 1}"
        )
    return i2t, t2i, _caption_lists(img2txt, t2img, n_txt), t2img


def _caption_lists(img2txt: Sequence[Iterable[int]], t2img: np.ndarray, n_txt: int) -> list[np.ndarray]:
    """``img2txt`` as index arrays, checked against ``txt2img``: every text is listed by its own image."""
    caps: list[np.ndarray] = []
    listed = np.zeros(n_txt, dtype=bool)
    for i, entry in enumerate(img2txt):
        try:
            entry = entry if hasattr(entry, "shape") else list(entry)
        except TypeError:
            raise EvalkitError(
                f"img2txt[{i}] must be a list of caption indices, got {entry!r}"
            ) from None
        c = _as_index_vector(f"img2txt[{i}]", entry)
        if c.size == 0:
            raise EvalkitError(f"image {i} has no captions in img2txt")
        out = c[(c < 0) | (c >= n_txt)]
        if out.size:
            raise EvalkitError(
                f"image {i} lists caption {int(out[0])}, outside 0..{n_txt - 1}"
            )
        wrong = c[t2img[c] != i]
        if wrong.size:
            j = int(wrong[0])
            raise EvalkitError(
                f"img2txt and txt2img disagree: image {i} lists text {j}, "
                f"but txt2img[{j}] = {int(t2img[j])}"
            )
        listed[c] = True
        caps.append(c)
    if not listed.all():
        j = int(np.flatnonzero(~listed)[0])
        raise EvalkitError(
            f"img2txt and txt2img disagree: text {j} belongs to image {int(t2img[j])} "
            "but is not among its captions"
        )
    return caps


def _ranks_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of ``targets[r]`` within row ``r`` of ``scores`` (stable-reversed order).

    ``rank = #(s > s_t) + #(s == s_t and index > t)``, computed in bounded row blocks.
    """
    n_rows, n_cand = scores.shape
    out = np.empty(n_rows, dtype=np.int64)
    block = max(1, _BLOCK_ELEMENTS // max(n_cand, 1))
    cols = np.arange(n_cand)
    for b0 in range(0, n_rows, block):
        s = scores[b0 : b0 + block]  # a view, [b, n_cand]
        t = targets[b0 : b0 + block]
        s_t = s[np.arange(s.shape[0]), t][:, None]
        greater = np.count_nonzero(s > s_t, axis=1)
        tied_after = np.count_nonzero((s == s_t) & (cols[None, :] > t[:, None]), axis=1)
        out[b0 : b0 + block] = greater + tied_after
    return out


def _best_captions(i2t: np.ndarray, caps: list[np.ndarray]) -> np.ndarray:
    """Each image's ground-truth caption that ranks first: highest score, ties -> larger index.

    The ranking order is a strict total order on (score desc, index desc), so the caption with
    the smallest rank is this one, and its rank is the image's best rank.
    """
    n_img = len(caps)
    width = max(c.shape[0] for c in caps)
    padded = np.zeros((n_img, width), dtype=np.int64)
    valid = np.zeros((n_img, width), dtype=bool)
    for i, c in enumerate(caps):
        padded[i, : c.shape[0]] = c
        valid[i, : c.shape[0]] = True
    gt = i2t[np.arange(n_img)[:, None], padded].astype(np.float64)
    best_score = np.where(valid, gt, -np.inf).max(axis=1)
    is_best = valid & (gt == best_score[:, None])
    return np.where(is_best, padded, -1).max(axis=1)


def per_query_ranks(
    i2t_scores: Any,
    t2i_scores: Any,
    img2txt: Sequence[Iterable[int]],
    txt2img: Sequence[int] | np.ndarray,
) -> QueryRanks:
    """0-based rank of the ground truth for every image query and every text query.

    Args:
        i2t_scores: ``[n_img, n_txt]`` scores, row = image query (higher = better).
        t2i_scores: ``[n_txt, n_img]`` scores, row = text query.
        img2txt: for every image, the indices of its captions (at least one).
        txt2img: for every text, the index of its image.

    Returns:
        :class:`QueryRanks` ``(txt_ranks [n_img], img_ranks [n_txt])``, int64, with the
        tie-breaking described in the module docstring (equal to LAVIS's ``ranks`` arrays).

    Raises:
        EvalkitError: shape mismatch, empty sets, NaN scores, an image without captions,
            an index out of range, or ``img2txt`` and ``txt2img`` that disagree.
    """
    i2t, t2i, caps, t2img = _validate(i2t_scores, t2i_scores, img2txt, txt2img)
    best = _best_captions(i2t, caps)
    txt_ranks = _ranks_of_targets(i2t, best)
    img_ranks = _ranks_of_targets(t2i, t2img)
    return QueryRanks(txt_ranks=txt_ranks, img_ranks=img_ranks)


def recall_from_ranks(ranks: Any, k: int) -> float:
    """``R@k = 100 * #(rank < k) / #queries`` for 0-based ranks (LAVIS's formula and float order).

    Raises:
        EvalkitError: ``k`` not a positive integer, or no ranks.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise EvalkitError(f"recall cut-off k must be a positive integer, got {k!r}")
    arr = np.asarray(ranks)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise EvalkitError("recall_from_ranks needs a non-empty 1-D array of ranks")
    return 100.0 * int(np.count_nonzero(arr < k)) / arr.shape[0]


def retrieval_recall(
    i2t_scores: Any,
    t2i_scores: Any,
    img2txt: Sequence[Iterable[int]],
    txt2img: Sequence[int] | np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Text- and image-retrieval Recall@K on the 0-100 scale, as LAVIS ``_report_metrics``.

    Returns ``txt_r{k}`` and ``img_r{k}`` for each ``k`` in ``ks``, ``txt_r_mean`` /
    ``img_r_mean`` (mean over ``ks``) and ``r_mean`` (their mean). ``txt_*`` = image queries
    retrieving captions; ``img_*`` = caption queries retrieving images. (LAVIS additionally
    logs ``agg_metrics``, which equals ``txt_r_mean``.)

    Raises:
        EvalkitError: as :func:`per_query_ranks`, or ``ks`` empty / not positive integers.
    """
    ks = tuple(ks)
    if not ks:
        raise EvalkitError("ks must name at least one recall cut-off")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise EvalkitError(f"recall cut-offs must be positive integers, got {k!r}")
    ranks = per_query_ranks(i2t_scores, t2i_scores, img2txt, txt2img)
    result: dict[str, float] = {}
    tr = [recall_from_ranks(ranks.txt_ranks, k) for k in ks]
    ir = [recall_from_ranks(ranks.img_ranks, k) for k in ks]
    for k, v in zip(ks, tr):
        result[f"txt_r{k}"] = v
    tr_mean = _left_sum(tr) / len(ks)
    result["txt_r_mean"] = tr_mean
    for k, v in zip(ks, ir):
        result[f"img_r{k}"] = v
    ir_mean = _left_sum(ir) / len(ks)
    result["img_r_mean"] = ir_mean
    result["r_mean"] = (tr_mean + ir_mean) / 2
    return result


def _left_sum(values: list[float]) -> float:
    """``((v0 + v1) + v2) + ...`` -- the association LAVIS's ``(tr1 + tr5 + tr10)`` uses."""
    total = values[0]
    for v in values[1:]:
        total = total + v
    return total
