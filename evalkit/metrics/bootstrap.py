"""Paired bootstrap confidence intervals for the difference of two runs' metrics.

Both runs are scored on the same samples. One bootstrap replicate draws, for each *unit* of
resampling (images for captioning, questions for VQA, image queries and text queries for
retrieval), ``n`` indices with replacement from that unit's ``n`` samples and turns them into a
count vector ``w`` (how often each sample was drawn). Every statistic is a function of these
weights, evaluated for both runs with the *same* weights (that is what makes it paired), and the
replicate's value is ``candidate - baseline``. Corpus metrics are re-computed on the resample:
corpus CIDEr with the resample's own idf (repeated images count as separate documents, exactly as
:func:`evalkit.metrics.caption_metrics.corpus_cider` does) and corpus BLEU from the summed n-gram
statistics.

Clusters: when a unit's samples come in groups that are not independent (the ~5 questions VQAv2 asks about
one image), ``clusters[unit]`` maps each sample to its group and a replicate draws *groups* with replacement;
each sample's weight is its group's count (the cluster bootstrap; Davison & Hinkley 1997, section 3.8). The
unclustered interval is narrower than it should be when the answers about one image are correlated.

The interval is the percentile interval of the replicates, shifted by ``observed - full``, where
``observed`` is the difference of the official numbers (run.json) and ``full`` the re-computed
difference on the full sample (all weights 1). When the re-computation is exact ``full ==
observed`` and this is the plain percentile interval; when a metric is approximated (e.g. METEOR
as a mean of per-image scores) the shift keeps the interval around the official difference.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from evalkit.core.errors import EvalkitError

Weights = Mapping[str, np.ndarray]  # unit name -> count vector (float) of one resample
DiffFn = Callable[[Weights], float]  # weights -> candidate - baseline


@dataclass(frozen=True)
class Interval:
    """A bootstrap result for one metric (0-100 points)."""

    estimate: float  # candidate - baseline, from the official numbers
    low: float
    high: float
    level: float
    n_boot: int
    seed: int
    full: float  # the re-computed difference on the full sample
    std_error: float

    def to_json(self) -> dict:
        return {"difference": self.estimate, "ci_low": self.low, "ci_high": self.high, "level": self.level,
                "n_boot": self.n_boot, "seed": self.seed, "rescored_difference": self.full,
                "std_error": self.std_error}


def verdict(low: float | None, high: float | None, tolerance: float, higher_is_better: bool = True) -> str:
    """``regression`` if the CI's upper bound < -tolerance, ``improvement`` if its lower bound > +tolerance,
    else ``no significant change``; mirrored for a metric where lower is better."""
    if low is None or high is None:
        return "no CI"
    if not higher_is_better:
        low, high = -high, -low
    if high < -tolerance:
        return "regression"
    if low > tolerance:
        return "improvement"
    return "no significant change"


def resample_weights(rng: np.random.Generator, sizes: Mapping[str, int],
                     clusters: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """One bootstrap replicate: a count vector per unit (units drawn in the given order). A clustered unit
    draws its clusters and gives every sample its cluster's count."""
    weights = {}
    for unit, n in sizes.items():
        index = (clusters or {}).get(unit)
        if index is None:
            drawn = rng.integers(0, n, size=n)
            weights[unit] = np.bincount(drawn, minlength=n).astype(np.float64)
        else:
            g = int(index.max()) + 1
            counts = np.bincount(rng.integers(0, g, size=g), minlength=g).astype(np.float64)
            weights[unit] = counts[index]
    return weights


def cluster_index(labels) -> np.ndarray:
    """Cluster labels (e.g. image paths, one per sample) -> cluster numbers 0..G-1 in order of appearance."""
    numbers: dict = {}
    return np.asarray([numbers.setdefault(label, len(numbers)) for label in labels], dtype=np.int64)


def paired_bootstrap(diffs: Mapping[str, DiffFn], sizes: Mapping[str, int], observed: Mapping[str, float],
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                     clusters: Mapping[str, np.ndarray] | None = None) -> dict[str, Interval]:
    """Bootstrap CIs for every statistic in ``diffs`` from the same resamples (see module docstring).

    ``sizes``: unit name -> number of samples; ``observed``: metric -> official candidate - baseline;
    ``clusters``: unit name -> each sample's cluster number (see :func:`cluster_index`), for units resampled
    by cluster. Seeded: the same inputs, ``n_boot`` and ``seed`` give the same intervals.
    """
    if n_boot < 10:
        raise EvalkitError(f"--n-boot must be at least 10 (got {n_boot})")
    if not 0 < level < 1:
        raise EvalkitError(f"confidence level must be in (0, 1), got {level}")
    for unit, n in sizes.items():
        if n < 1:
            raise EvalkitError(f"nothing to resample: no {unit} samples")
        if clusters and unit in clusters and len(clusters[unit]) != n:
            raise EvalkitError(f"{unit}: {len(clusters[unit])} cluster labels for {n} samples")
    ones = {unit: np.ones(n) for unit, n in sizes.items()}
    full = {name: float(fn(ones)) for name, fn in diffs.items()}
    rng = np.random.default_rng(seed)
    reps = {name: np.empty(n_boot) for name in diffs}
    # ratios are linear in the weights: per unit, one matrix-vector product gives all of them
    ratios: dict[str, list[str]] = {}
    for name, fn in diffs.items():
        if isinstance(fn, Ratio):
            ratios.setdefault(fn.unit, []).append(name)
    stacked = {unit: np.column_stack([diffs[n].delta for n in names] + [diffs[n].den for n in names])
               for unit, names in ratios.items()}
    others = [name for name, fn in diffs.items() if not isinstance(fn, Ratio)]
    for b in range(n_boot):
        weights = resample_weights(rng, sizes, clusters)
        for unit, names in ratios.items():
            sums = weights[unit] @ stacked[unit]
            k = len(names)
            for j, name in enumerate(names):
                reps[name][b] = sums[j] / sums[k + j] if sums[k + j] > 0 else 0.0
        for name in others:
            reps[name][b] = diffs[name](weights)
    alpha = (1.0 - level) / 2.0
    out = {}
    for name, values in reps.items():
        estimate = float(observed.get(name, full[name]))
        lo, hi = np.quantile(values - full[name], [alpha, 1.0 - alpha])
        out[name] = Interval(estimate, float(estimate + lo), float(estimate + hi), level, n_boot, seed, full[name],
                             float(np.std(values, ddof=1)))
    return out


# --------------------------------------------------------------------------------------------
# Statistics as functions of resampling weights
# --------------------------------------------------------------------------------------------


class Ratio:
    """``sum(w*den*cand)/sum(w*den) - sum(w*den*base)/sum(w*den)`` over one unit: a mean (den = 1) or a
    subgroup mean (den = 0/1 mask). Callable like any statistic; :func:`paired_bootstrap` evaluates all
    ratios of a unit together (one matrix-vector product per resample)."""

    def __init__(self, unit: str, base_num, cand_num, den=None):
        base_num = np.asarray(base_num, dtype=np.float64)
        cand_num = np.asarray(cand_num, dtype=np.float64)
        self.unit = unit
        self.den = np.ones_like(base_num) if den is None else np.asarray(den, dtype=np.float64)
        self.delta = (cand_num - base_num) * self.den  # a subgroup mean only counts the subgroup's samples

    def __call__(self, weights: Weights) -> float:
        w = weights[self.unit]
        total = float(np.dot(w, self.den))
        return float(np.dot(w, self.delta)) / total if total > 0 else 0.0


def ratio_diff(unit: str, base_num: np.ndarray, cand_num: np.ndarray, den: np.ndarray | None = None) -> Ratio:
    """See :class:`Ratio`."""
    return Ratio(unit, base_num, cand_num, den)


def mean_difference_ci(baseline: Sequence[float], candidate: Sequence[float], n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> Interval:
    """Paired bootstrap CI of ``mean(candidate) - mean(baseline)`` over the same samples."""
    base = np.asarray(baseline, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if base.shape != cand.shape:
        raise EvalkitError("paired samples must have the same length")
    fn = ratio_diff("samples", base, cand)
    return paired_bootstrap({"mean": fn}, {"samples": len(base)}, {}, n_boot, seed, level)["mean"]


# --------------------------------------------------------------------------------------------
# Corpus CIDEr (CIDEr-D as pycocoevalcap's CiderScorer) and corpus BLEU, re-computed per resample
# --------------------------------------------------------------------------------------------


def _ngrams(sentence: str, n: int = 4) -> dict[tuple[str, ...], int]:
    words = sentence.split()
    counts: dict[tuple[str, ...], int] = defaultdict(int)
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i:i + k])] += 1
    return counts


def _indexed_ngrams(vocab: dict[tuple[str, ...], int], sentence: str, n: int) -> dict[int, int]:
    """1..n-gram counts of ``sentence`` keyed by their ``vocab`` index (new n-grams are added)."""
    return {vocab.setdefault(gram, len(vocab)): c for gram, c in _ngrams(sentence, n).items()}


def _cider_length(sentence: str) -> int:
    """The length ``CiderScorer`` uses in its Gaussian penalty: the number of bigrams."""
    return sum(c for g, c in _ngrams(sentence, 2).items() if len(g) == 2)


def _squared_counts_coo(counts_per_row: Sequence[Mapping[int, int]]) -> tuple[np.ndarray, ...]:
    """Per-row ``{n-gram: count}`` as COO arrays ``(row, n-gram, count ** 2)``."""
    rows, grams, squares = [], [], []
    for r, counts in enumerate(counts_per_row):
        for g, c in counts.items():
            rows.append(r)
            grams.append(g)
            squares.append(float(c) ** 2)
    return (np.asarray(rows, dtype=np.int64), np.asarray(grams, dtype=np.int64),
            np.asarray(squares, dtype=np.float64))


def _clipped_products_coo(hyp_counts: Sequence[Mapping[int, int]], ref_counts: Sequence[Mapping[int, int]],
                          ref_img: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Per reference row ``r``: ``min(hyp, ref) * ref`` of every shared n-gram, as COO arrays."""
    m_row, m_gram, m_val = [], [], []
    for r, counts in enumerate(ref_counts):
        for g, h in hyp_counts[ref_img[r]].items():
            c = counts.get(g)
            if c:
                m_row.append(r)
                m_gram.append(g)
                m_val.append(float(min(h, c) * c))
    return (np.asarray(m_row, dtype=np.int64), np.asarray(m_gram, dtype=np.int64),
            np.asarray(m_val, dtype=np.float64))


class CiderCorpus:
    """Corpus CIDEr of any resample of a fixed image set, for one or more prediction sets, fast.

    Numerically the same as ``corpus_cider(tok_refs, tok_preds, resample_ids)`` (pycocoevalcap's
    ``CiderScorer``: n = 1..4, sigma = 6, idf from the resample's references, each repeated image
    one more document, clipping, and its length = number of bigrams), but vectorised over
    n-grams so that 1,000 resamples of 5,000 images take seconds instead of hours.
    ``tok_refs``/``tok_preds`` are PTB-tokenised (see ``tokenize_captions``).
    """

    N = 4
    SIGMA = 6.0

    def __init__(self, image_ids: Sequence, tok_refs: Mapping, predictions: Mapping[str, Mapping]):
        self.image_ids = list(image_ids)
        vocab: dict[tuple[str, ...], int] = {}  # n-gram -> column; references first, then each prediction set
        ref_counts = self._index_references(tok_refs, vocab)
        self.r_row, self.r_gram, self.r_val = _squared_counts_coo(ref_counts)
        self.preds = {name: self._index_predictions(tok_preds, ref_counts, vocab)
                      for name, tok_preds in predictions.items()}
        self.vocab_size = len(vocab)
        self.gram_order = np.zeros(self.vocab_size, dtype=np.int64)
        for gram, g in vocab.items():
            self.gram_order[g] = len(gram) - 1

    def _index_references(self, tok_refs: Mapping, vocab: dict[tuple[str, ...], int]) -> list[dict[int, int]]:
        """Set the document n-grams per image and the (image, reference) rows; return each row's counts."""
        doc_img, doc_gram = [], []
        ref_counts: list[dict[int, int]] = []
        ref_img, ref_len = [], []
        self.n_refs = np.zeros(len(self.image_ids))
        for i, image_id in enumerate(self.image_ids):
            refs = list(tok_refs[image_id])
            if not refs:
                raise EvalkitError(f"image {image_id!r} has no references")
            self.n_refs[i] = len(refs)
            seen = set()
            for ref in refs:
                counts = _indexed_ngrams(vocab, ref, self.N)
                seen.update(counts)
                ref_counts.append(counts)
                ref_img.append(i)
                ref_len.append(_cider_length(ref))
            doc_img.extend([i] * len(seen))
            doc_gram.extend(seen)
        self.doc_img = np.asarray(doc_img, dtype=np.int64)
        self.doc_gram = np.asarray(doc_gram, dtype=np.int64)
        self.ref_img = np.asarray(ref_img, dtype=np.int64)
        self.ref_len = np.asarray(ref_len, dtype=np.float64)
        self.n_ref_rows = len(ref_counts)
        return ref_counts

    def _index_predictions(self, tok_preds: Mapping, ref_counts: list[dict[int, int]],
                           vocab: dict[tuple[str, ...], int]) -> dict[str, np.ndarray]:
        """One prediction set's n-gram counts per image, clipped products per reference row, length penalty."""
        hyp_counts = [_indexed_ngrams(vocab, tok_preds[image_id], self.N) for image_id in self.image_ids]
        h_img, h_gram, h_val = _squared_counts_coo(hyp_counts)
        m_row, m_gram, m_val = _clipped_products_coo(hyp_counts, ref_counts, self.ref_img.tolist())
        hyp_len = np.asarray([_cider_length(tok_preds[image_id]) for image_id in self.image_ids], dtype=np.float64)
        delta = hyp_len[self.ref_img] - self.ref_len
        return {"h_img": h_img, "h_gram": h_gram, "h_val": h_val, "m_row": m_row, "m_gram": m_gram, "m_val": m_val,
                "penalty": np.exp(-(delta ** 2) / (2 * self.SIGMA ** 2))}

    def _by_order(self, rows: np.ndarray, grams: np.ndarray, values: np.ndarray, w2: np.ndarray, n_rows: int):
        """sum over n-grams of ``values * w2`` per (row, n-gram order) -> array (n_rows, N)."""
        keys = rows * self.N + self.gram_order[grams]
        out = np.bincount(keys, weights=values * w2[grams], minlength=n_rows * self.N)
        return out.astype(np.float64, copy=False).reshape(n_rows, self.N)  # (bincount of nothing is int)

    def scores(self, weights: np.ndarray | None = None) -> dict[str, float]:
        """Corpus CIDEr (0-100) of each prediction set on the resample with these image counts."""
        n_img = len(self.image_ids)
        w_img = np.ones(n_img) if weights is None else np.asarray(weights, dtype=np.float64)
        total = float(w_img.sum())
        df = np.bincount(self.doc_gram, weights=w_img[self.doc_img], minlength=self.vocab_size)
        idf = np.log(total) - np.log(np.maximum(1.0, df))
        w2 = idf * idf
        norm_ref = np.sqrt(self._by_order(self.r_row, self.r_gram, self.r_val, w2, self.n_ref_rows))
        out = {}
        for name, p in self.preds.items():
            norm_hyp = np.sqrt(self._by_order(p["h_img"], p["h_gram"], p["h_val"], w2, n_img))
            val = self._by_order(p["m_row"], p["m_gram"], p["m_val"], w2, self.n_ref_rows)
            denom = norm_hyp[self.ref_img] * norm_ref
            sim = np.divide(val, denom, out=np.zeros_like(val), where=denom != 0)
            sim *= p["penalty"][:, None]
            per_image = np.bincount(self.ref_img, weights=sim.mean(axis=1), minlength=n_img) / self.n_refs * 10.0
            out[name] = 100.0 * float(w_img @ per_image) / total
        return out


class BleuCorpus:
    """Corpus BLEU-1..4 (pycocoevalcap ``Bleu(4)``, 'closest' reference length) of any resample.

    Corpus BLEU only depends on per-image sums (test length, closest reference length, guessed and
    correct n-grams per order), so a resample is a weighted sum of per-image statistics: exact.
    """

    def __init__(self, image_ids: Sequence, tok_refs: Mapping, predictions: Mapping[str, Mapping]):
        from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

        self.stats = {}
        for name, tok_preds in predictions.items():
            rows = []
            for image_id in image_ids:
                comps = cook_test(tok_preds[image_id], cook_refs(list(tok_refs[image_id])))
                testlen = comps["testlen"]
                reflen = min((abs(length - testlen), length) for length in comps["reflen"])[1]
                rows.append([testlen, reflen, *comps["guess"], *comps["correct"]])
            self.stats[name] = np.asarray(rows, dtype=np.float64)

    def scores(self, weights: np.ndarray | None = None) -> dict[str, dict[str, float]]:
        """{prediction set: {"BLEU-1": .., ..., "BLEU-4": ..}} (0-100) on the resample."""
        small, tiny = 1e-9, 1e-15
        out = {}
        for name, stats in self.stats.items():
            totals = stats.sum(axis=0) if weights is None else np.asarray(weights, dtype=np.float64) @ stats
            testlen, reflen, guess, correct = totals[0], totals[1], totals[2:6], totals[6:10]
            bleus, bleu = [], 1.0
            for k in range(4):
                bleu *= float(correct[k] + tiny) / (guess[k] + small)
                bleus.append(bleu ** (1.0 / (k + 1)))
            ratio = (testlen + tiny) / (reflen + small)
            if ratio < 1:
                bleus = [b * np.exp(1 - 1 / ratio) for b in bleus]
            out[name] = {f"BLEU-{k + 1}": 100.0 * float(b) for k, b in enumerate(bleus)}
        return out
