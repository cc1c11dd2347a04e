"""BLIP-2 image-text retrieval scoring: ITC shortlist followed by ITM re-ranking.

This module implements, in plain torch, the scoring protocol that LAVIS uses to evaluate
BLIP-2 (and BLIP) on COCO / Flickr30k retrieval (``compute_sim_matrix`` in
``lavis/models/blip2_models/blip2.py``; the same scheme as ``evaluation`` in BLIP's
``train_retrieval.py``). It is an independent implementation of the same rules, not a copy.

Protocol
--------
* Image features: the Q-Former's 32 query outputs, projected and L2-normalised,
  ``image_feats[i, q, :]``  (shape ``[n_img, n_query, d]``).
* Text features: the projected, L2-normalised ``[CLS]`` output, ``text_feats[j, :]``
  (shape ``[n_txt, d]``).
* ITC similarity (:func:`itc_similarity`)::

      sim[i, j] = max_q  <image_feats[i, q], text_feats[j]>

* Re-ranking (:func:`rerank_with_itm`), with ``k`` (LAVIS ``k_test``, 128 for BLIP-2 on
  COCO and Flickr30k) clamped to the number of candidates:

  - image -> text matrix ``i2t`` (``[n_img, n_txt]``): for every image ``i`` take the ``k``
    texts with the highest ``sim[i, :]`` and set ``i2t[i, j] = itm(i, j) + sim[i, j]``;
  - text -> image matrix ``t2i`` (``[n_txt, n_img]``): for every text ``j`` take the ``k``
    images with the highest ``sim[:, j]`` and set ``t2i[j, i] = itm(i, j) + sim[i, j]``;
  - every entry that was not re-scored holds a fill value (LAVIS: ``-100.0``) that is
    below every re-scored entry of the matrix.

  ``itm(i, j)`` is the ITM head's *positive-class logit* (no softmax). For BLIP-2 LAVIS
  averages that logit over the 32 query positions (``itm_logit[:, :, 1].mean(dim=1)`` in
  ``Blip2Qformer.compute_itm``); for BLIP it is the logit of the ``[CLS]`` position. That is
  the caller's ``itm_score_fn``'s business; this module only batches the pairs.

  The shortlists are chosen with ``torch.topk`` as in LAVIS; which of several exactly tied
  candidates at the k-th place gets in is whatever ``topk`` picks (LAVIS has the same
  unspecified behaviour). ``k`` is clamped per direction to the number of candidates
  (``min(k, n_txt)`` texts per image, ``min(k, n_img)`` images per text); LAVIS itself would
  fail for k > candidates. With ``k >= max(n_img, n_txt)`` every pair is re-scored and the
  result equals ITM + ITC over all pairs.

* Invariant: every pair outside a query's shortlist ranks below every pair in it. If a
  re-scored value is ``<= fill_value`` (an ITM logit below about -100 with the default, where
  LAVIS would let un-scored candidates tie with or overtake it) the fill is lowered to ``-inf``
  and a warning is issued; otherwise the matrices equal LAVIS's.
* Deduplication (``dedupe=True``, the default): a pair that is in both an image's and a text's
  shortlist is scored once and its value used in both matrices, instead of twice as LAVIS
  does. Each matrix entry is the same float addition ``itm(i, j) + sim[i, j]`` of the same two
  operands either way, so the result is bitwise identical provided ``itm_score_fn`` is a
  function of the pair alone (a model in eval mode; on GPUs batch-dependent kernel choices can
  make LAVIS's two evaluations of one pair differ by rounding noise, deduplication removes that
  noise). Deduplicated pairs are scored sorted by (image, text), i.e. grouped by image.

The two matrices are ranked by :mod:`evalkit.metrics.retrieval_recall`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from evalkit.core.errors import EvalkitError

__all__ = ["ItmScoreFn", "ProgressFn", "itc_similarity", "rerank_with_itm", "LAVIS_FILL_VALUE"]

#: ``itm_score_fn(image_idx, text_idx) -> logits``: given two equally long int64 index
#: tensors naming ``B`` (image, text) pairs, return the ``B`` ITM positive logits.
ItmScoreFn = Callable[[Tensor, Tensor], Tensor]

#: ``progress(pairs_done, pairs_total)``, called after every ITM batch.
ProgressFn = Callable[[int, int], None]

#: The score LAVIS / BLIP give to every (query, candidate) pair outside the ITC top-k.
LAVIS_FILL_VALUE = -100.0


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EvalkitError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_features(image_feats: object, text_feats: object) -> None:
    """Raise :class:`EvalkitError` unless the features suit :func:`itc_similarity`."""
    if not isinstance(image_feats, Tensor) or not isinstance(text_feats, Tensor):
        raise EvalkitError("itc_similarity expects torch tensors for image_feats and text_feats")
    if image_feats.dim() != 3:
        raise EvalkitError(
            f"image_feats must be [n_img, n_query, d], got shape {tuple(image_feats.shape)}"
        )
    if text_feats.dim() != 2:
        raise EvalkitError(f"text_feats must be [n_txt, d], got shape {tuple(text_feats.shape)}")
    if not image_feats.is_floating_point() or not text_feats.is_floating_point():
        raise EvalkitError(
            f"features must be floating point, got {image_feats.dtype} and {text_feats.dtype}"
        )
    _, n_query, dim = image_feats.shape
    _, text_dim = text_feats.shape
    if dim != text_dim:
        raise EvalkitError(
            f"feature sizes differ: image_feats has d={dim}, text_feats has d={text_dim}"
        )
    if n_query == 0:
        raise EvalkitError("image_feats has 0 query tokens; the max over queries is undefined")
    if image_feats.device != text_feats.device:
        raise EvalkitError(
            f"image_feats is on {image_feats.device} but text_feats is on {text_feats.device}"
        )



def itc_similarity(
    image_feats: Tensor,
    text_feats: Tensor,
    *,
    chunk_size: int = 128,
    text_chunk_size: int = 8192,
) -> Tensor:
    """Image-text contrastive similarity of BLIP-2: the best of the image's query tokens.

    ``sim[i, j] = max_q sum_d image_feats[i, q, d] * text_feats[j, d]``

    (LAVIS ``compute_sim_matrix``: ``(image_embed @ text_embeds.t()).max(0)`` per image.)
    The features are expected to be L2-normalised already; nothing is normalised here.

    The product is computed block by block: ``chunk_size`` images against
    ``text_chunk_size`` texts at a time, so the only intermediate is a
    ``[chunk_size * n_query, text_chunk_size]`` block (128 * 32 * 8192 fp32 = 128 MiB with
    the defaults) and the ``[n_img, n_query, n_txt]`` tensor is never materialised. The
    result, ``[n_img, n_txt]``, is the one full-size allocation (COCO 5k test: 5,000 x 25,010
    fp32 = 500 MB).

    Args:
        image_feats: ``[n_img, n_query, d]`` floating tensor.
        text_feats: ``[n_txt, d]`` floating tensor, same device.
        chunk_size: images per block (>= 1).
        text_chunk_size: texts per block (>= 1).

    Returns:
        ``[n_img, n_txt]`` tensor in the promoted dtype of the two inputs, on their device.

    Raises:
        EvalkitError: wrong ranks, mismatched feature sizes or devices, non-float input,
            zero query tokens, non-positive chunk sizes.
    """
    _check_positive_int("chunk_size", chunk_size)
    _check_positive_int("text_chunk_size", text_chunk_size)
    _check_features(image_feats, text_feats)
    n_img, n_query, dim = image_feats.shape
    n_txt = text_feats.shape[0]
    dtype = torch.promote_types(image_feats.dtype, text_feats.dtype)
    out = torch.empty((n_img, n_txt), dtype=dtype, device=image_feats.device)
    if n_img == 0 or n_txt == 0:
        return out
    with torch.no_grad():
        text_t = text_feats.to(dtype).t()  # [d, n_txt], a view when no cast is needed
        for i0 in range(0, n_img, chunk_size):
            block = image_feats[i0 : i0 + chunk_size].to(dtype)
            n_blk = block.shape[0]
            flat = block.reshape(n_blk * n_query, dim)
            for j0 in range(0, n_txt, text_chunk_size):
                prod = flat @ text_t[:, j0 : j0 + text_chunk_size]  # [n_blk * q, n_t]
                out[i0 : i0 + n_blk, j0 : j0 + prod.shape[1]] = prod.view(
                    n_blk, n_query, prod.shape[1]
                ).amax(dim=1)
    return out


def _call_itm(
    itm_score_fn: ItmScoreFn,
    img_idx: Tensor,
    txt_idx: Tensor,
    batch_size: int,
    out_dtype: torch.dtype,
    out_device: torch.device,
    progress: ProgressFn | None,
) -> Tensor:
    """Score the pairs ``(img_idx[p], txt_idx[p])`` in batches of at most ``batch_size``."""
    total = int(img_idx.numel())
    scores = torch.empty(total, dtype=out_dtype, device=out_device)
    for b0 in range(0, total, batch_size):
        b1 = min(b0 + batch_size, total)
        got = itm_score_fn(img_idx[b0:b1], txt_idx[b0:b1])
        if not isinstance(got, Tensor):
            try:
                got = torch.as_tensor(got)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise EvalkitError(
                    f"itm_score_fn must return a tensor of {b1 - b0} logits, got {type(got).__name__}"
                ) from exc
        if got.dim() == 2 and got.shape[1] == 1:
            got = got[:, 0]
        if got.dim() != 1 or got.shape[0] != b1 - b0:
            raise EvalkitError(
                f"itm_score_fn returned shape {tuple(got.shape)} for {b1 - b0} pairs; "
                f"expected one ITM positive logit per pair, shape ({b1 - b0},)"
            )
        got = got.detach().to(device=out_device, dtype=out_dtype)
        if not bool(torch.isfinite(got).all()):
            bad = int((~torch.isfinite(got)).nonzero()[0, 0]) + b0
            raise EvalkitError(
                f"itm_score_fn returned a non-finite logit for image {int(img_idx[bad])}, "
                f"text {int(txt_idx[bad])}"
            )
        scores[b0:b1] = got
        if progress is not None:
            progress(b1, total)
    return scores


def _check_rerank_args(sim_i2t: object, k: object, batch_size: object, fill_value: object) -> None:
    """Raise :class:`EvalkitError` for any argument :func:`rerank_with_itm` cannot use."""
    if not isinstance(sim_i2t, Tensor):
        raise EvalkitError("sim_i2t must be a torch tensor")
    if sim_i2t.dim() != 2:
        raise EvalkitError(f"sim_i2t must be [n_img, n_txt], got shape {tuple(sim_i2t.shape)}")
    if not sim_i2t.is_floating_point():
        raise EvalkitError(f"sim_i2t must be floating point, got {sim_i2t.dtype}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise EvalkitError(f"k must be a non-negative integer, got {k!r}")
    _check_positive_int("batch_size", batch_size)
    if not isinstance(fill_value, (int, float)) or math.isnan(fill_value):
        raise EvalkitError(f"fill_value must be a number, got {fill_value!r}")
    if not bool(torch.isfinite(sim_i2t).all()):
        raise EvalkitError("sim_i2t contains NaN or infinite similarities")


def _shortlist(scores: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``k`` best candidates of every row (query) of ``scores``.

    Returns ``(values [n_query, k], candidates [n_query, k], query_of_pair [n_query * k])``;
    ``candidates.reshape(-1)`` is the candidate of each pair.
    """
    values, candidates = scores.topk(k, dim=1)
    query_of_pair = torch.arange(scores.shape[0], device=scores.device).repeat_interleave(k)
    return values, candidates, query_of_pair


def _itm_of_pairs(
    itm_score_fn: ItmScoreFn,
    img_idx: Tensor,
    txt_idx: Tensor,
    n_txt: int,
    batch_size: int,
    out_dtype: torch.dtype,
    progress: ProgressFn | None,
    dedupe: bool,
) -> Tensor:
    """ITM logit of every pair ``(img_idx[p], txt_idx[p])``, on ``img_idx``'s device.

    With ``dedupe`` each distinct pair is scored once, in (image, text) order, and its logit is
    copied to every position that names it.
    """
    device = img_idx.device
    if not dedupe:
        return _call_itm(itm_score_fn, img_idx.cpu(), txt_idx.cpu(), batch_size, out_dtype, device, progress)
    uniq, inverse = torch.unique(img_idx * n_txt + txt_idx, sorted=True, return_inverse=True)
    uniq = uniq.cpu()
    itm_uniq = _call_itm(
        itm_score_fn,
        torch.div(uniq, n_txt, rounding_mode="floor"),
        uniq % n_txt,
        batch_size,
        out_dtype,
        device,
        progress,
    )
    return itm_uniq[inverse]


def _fill_below(fill_value: float, *rescored: Tensor) -> float:
    """``fill_value``, or ``-inf`` (with a warning) when a re-scored value is not above it.

    The warning points at the caller of :func:`rerank_with_itm` (``stacklevel=3``).
    """
    fill = float(fill_value)
    lowest = min(float(values.min()) for values in rescored)
    if lowest <= fill:
        warnings.warn(
            f"a re-ranked score ({lowest:.4g}) is <= the fill value {fill:g}; "
            "filling un-scored pairs with -inf so they stay below every re-ranked pair",
            RuntimeWarning,
            stacklevel=3,
        )
        fill = -math.inf
    return fill


def _scatter_rows(candidates: Tensor, values: Tensor, n_candidates: int, fill: float) -> Tensor:
    """``[n_query, n_candidates]`` matrix of ``fill`` with ``values`` at each row's ``candidates``."""
    out = torch.full(
        (candidates.shape[0], n_candidates), fill, dtype=values.dtype, device=values.device
    )
    return out.scatter_(1, candidates, values)


def rerank_with_itm(
    sim_i2t: Tensor,
    itm_score_fn: ItmScoreFn,
    k: int = 128,
    batch_size: int = 1024,
    progress: ProgressFn | None = None,
    *,
    rerank: bool = True,
    dedupe: bool = True,
    fill_value: float = LAVIS_FILL_VALUE,
) -> tuple[Tensor, Tensor]:
    """Re-rank the ITC top-k of every query with ITM, exactly as LAVIS builds its score matrices.

    ``i2t[i, j]`` (the ``k`` texts with the largest ``sim_i2t[i, :]``) and ``t2i[j, i]`` (the
    ``k`` images with the largest ``sim_i2t[:, j]``) become ``itm(i, j) + sim_i2t[i, j]``, all
    other entries ``fill_value``; the module docstring gives the clamping of ``k``, ties, the
    fill invariant (``-inf`` and a warning) and why ``dedupe`` is bitwise identical. ``k == 0``
    or ``rerank=False`` returns ``sim_i2t`` and its transpose (new tensors), calling no ITM.

    Args:
        sim_i2t: ``[n_img, n_txt]`` ITC similarities (from :func:`itc_similarity`), finite.
        itm_score_fn: ``fn(image_idx, text_idx) -> Tensor[B]`` with ``image_idx``, ``text_idx``
            CPU int64 tensors of the same length ``B <= batch_size``; returns the ITM
            positive logit of each pair (shape ``[B]`` or ``[B, 1]``, any device).
        k: shortlist size per query (LAVIS ``k_test``; 128 for BLIP-2 COCO / Flickr30k).
        batch_size: maximum number of pairs per ``itm_score_fn`` call.
        progress: optional ``fn(pairs_done, pairs_total)`` called after each batch.
        rerank: ``False`` returns the ITC-only matrices.
        dedupe: score pairs shared by both shortlists once.
        fill_value: score of un-scored pairs (LAVIS: -100.0).

    Returns:
        ``(i2t_scores [n_img, n_txt], t2i_scores [n_txt, n_img])`` on ``sim_i2t``'s device, in
        ``sim_i2t``'s dtype promoted to at least float32 (LAVIS: float32).

    Raises:
        EvalkitError: bad shapes / dtypes / non-finite similarities, negative ``k``, non-positive
            ``batch_size``, or an ``itm_score_fn`` result of the wrong shape or not finite.
    """
    _check_rerank_args(sim_i2t, k, batch_size, fill_value)
    out_dtype = torch.promote_types(sim_i2t.dtype, torch.float32)
    n_img, n_txt = sim_i2t.shape
    with torch.no_grad():
        sim = sim_i2t.to(out_dtype)
        if not rerank or k == 0 or n_img == 0 or n_txt == 0:
            return sim.clone(), sim.t().contiguous()
        i2t_sim, i2t_idx, i2t_img = _shortlist(sim, min(k, n_txt))  # image queries
        t2i_sim, t2i_idx, t2i_txt = _shortlist(sim.t(), min(k, n_img))  # text queries
        itm = _itm_of_pairs(
            itm_score_fn,
            torch.cat([i2t_img, t2i_idx.reshape(-1)]),
            torch.cat([i2t_idx.reshape(-1), t2i_txt]),
            n_txt, batch_size, out_dtype, progress, dedupe,
        )
        n_i2t_pairs = i2t_img.numel()
        i2t_vals = itm[:n_i2t_pairs].view(i2t_sim.shape) + i2t_sim
        t2i_vals = itm[n_i2t_pairs:].view(t2i_sim.shape) + t2i_sim
        del itm
        fill = _fill_below(fill_value, i2t_vals, t2i_vals)
        return _scatter_rows(i2t_idx, i2t_vals, n_txt, fill), _scatter_rows(t2i_idx, t2i_vals, n_img, fill)
