"""Paired bootstrap: coverage, seeding, the verdict rule, and exact corpus CIDEr/BLEU re-scoring."""

from __future__ import annotations

import random

import numpy as np
import pytest

from evalkit.metrics.bootstrap import (BleuCorpus, CiderCorpus, mean_difference_ci, paired_bootstrap, ratio_diff,
                               resample_weights, verdict)
from evalkit.core.errors import EvalkitError


def test_coverage_of_a_known_mean_difference():
    """Paired normal samples with a true mean difference of 0.3: the 95% CI covers it ~95% of the time."""
    true_diff, n, reps = 0.3, 120, 200
    rng = np.random.default_rng(12345)
    covered = 0
    widths = []
    for rep in range(reps):
        shared = rng.normal(0.0, 1.0, n)  # per-sample difficulty, common to both runs (the pairing)
        base = shared + rng.normal(0.0, 0.5, n)
        cand = shared + true_diff + rng.normal(0.0, 0.5, n)
        ci = mean_difference_ci(base, cand, n_boot=400, seed=rep)
        covered += ci.low <= true_diff <= ci.high
        widths.append(ci.high - ci.low)
    coverage = covered / reps
    assert 0.90 <= coverage <= 0.99, coverage
    # paired: the width reflects the difference's sd (0.5*sqrt(2)), not the samples' sd (~1.1)
    expected = 2 * 1.96 * 0.5 * np.sqrt(2) / np.sqrt(n)
    assert 0.8 * expected < np.mean(widths) < 1.2 * expected


def test_seeded_reproducibility():
    rng = np.random.default_rng(0)
    base, cand = rng.normal(size=300), rng.normal(size=300) + 0.1
    a = mean_difference_ci(base, cand, n_boot=500, seed=7)
    b = mean_difference_ci(base, cand, n_boot=500, seed=7)
    c = mean_difference_ci(base, cand, n_boot=500, seed=8)
    assert (a.low, a.high) == (b.low, b.high)
    assert (a.low, a.high) != (c.low, c.high)
    assert a.estimate == pytest.approx(float(np.mean(cand - base)))


def test_identical_samples_give_a_zero_width_interval():
    values = np.linspace(0, 100, 50)
    ci = mean_difference_ci(values, values, n_boot=200)
    assert ci.low == ci.high == ci.estimate == 0.0


def test_verdict_rule_with_tolerance():
    assert verdict(-3.0, -1.0, 0.0) == "regression"
    assert verdict(-3.0, -1.0, 1.0) == "no significant change"  # upper bound -1 is not < -1
    assert verdict(-3.0, -1.0, 0.5) == "regression"
    assert verdict(0.5, 2.0, 0.0) == "improvement"
    assert verdict(0.5, 2.0, 0.5) == "no significant change"
    assert verdict(-1.0, 1.0, 0.0) == "no significant change"
    assert verdict(None, None, 0.0) == "no CI"


def test_subgroup_ratio_only_counts_the_subgroup():
    base = np.array([0.0, 0.0, 100.0, 100.0])
    cand = np.array([100.0, 100.0, 0.0, 100.0])
    mask = np.array([1.0, 1.0, 0.0, 0.0])
    fn = ratio_diff("q", base, cand, den=mask)
    assert fn({"q": np.ones(4)}) == pytest.approx(100.0)
    assert ratio_diff("q", base, cand)({"q": np.ones(4)}) == pytest.approx(25.0)
    assert fn({"q": np.array([2.0, 0.0, 1.0, 1.0])}) == pytest.approx(100.0)


def test_shift_keeps_the_interval_around_the_official_difference():
    base, cand = np.zeros(40), np.full(40, 10.0)
    fn = ratio_diff("s", base, cand)
    out = paired_bootstrap({"m": fn}, {"s": 40}, {"m": 12.0}, n_boot=100, seed=0)["m"]
    assert out.full == pytest.approx(10.0)
    assert out.low == pytest.approx(12.0) and out.high == pytest.approx(12.0)


def test_bad_arguments():
    with pytest.raises(EvalkitError):
        mean_difference_ci([1, 2], [1, 2, 3])
    with pytest.raises(EvalkitError):
        mean_difference_ci([1, 2], [1, 2], n_boot=1)


def test_resample_weights_sum_to_n():
    weights = resample_weights(np.random.default_rng(0), {"a": 17, "b": 5})
    assert weights["a"].sum() == 17 and weights["b"].sum() == 5 and len(weights["a"]) == 17


# --------------------------------------------------------------------------------------------
# corpus re-scoring equals pycocoevalcap / caption_metrics.corpus_cider
# --------------------------------------------------------------------------------------------

WORDS = "a the red blue green circle square triangle shapes three two one with and on left right".split()


def _random_captions(seed: int, n: int):
    rnd = random.Random(seed)

    def sentence(k):
        return " ".join(rnd.choice(WORDS) for _ in range(k))

    ids = [str(i) for i in range(n)]
    refs = {i: [sentence(rnd.randint(2, 12)) for _ in range(rnd.randint(1, 5))] for i in ids}
    a = {i: sentence(rnd.randint(0, 10)) for i in ids}
    b = {i: sentence(rnd.randint(1, 10)) for i in ids}
    return ids, refs, a, b


def test_cider_corpus_equals_corpus_cider_on_resamples():
    from evalkit.metrics.caption_metrics import corpus_cider

    ids, refs, a, b = _random_captions(1, 40)
    fast = CiderCorpus(ids, refs, {"a": a, "b": b})
    rng = np.random.default_rng(3)
    for _ in range(4):
        drawn = rng.integers(0, len(ids), len(ids))
        weights = np.bincount(drawn, minlength=len(ids)).astype(float)
        resample = [ids[j] for j in drawn]
        got = fast.scores(weights)
        assert got["a"] == pytest.approx(corpus_cider(refs, a, resample), rel=1e-9, abs=1e-9)
        assert got["b"] == pytest.approx(corpus_cider(refs, b, resample), rel=1e-9, abs=1e-9)
    assert fast.scores()["a"] == pytest.approx(corpus_cider(refs, a, ids), rel=1e-9)


def test_cider_corpus_full_set_equals_pycocoevalcap_cider():
    from pycocoevalcap.cider.cider import Cider

    ids, refs, a, _ = _random_captions(2, 25)
    score, _ = Cider().compute_score({i: refs[i] for i in ids}, {i: [a[i]] for i in ids})
    assert CiderCorpus(ids, refs, {"a": a}).scores()["a"] == pytest.approx(100 * score, rel=1e-9)


def test_bleu_corpus_equals_pycocoevalcap_bleu_on_resamples():
    from pycocoevalcap.bleu.bleu import Bleu

    ids, refs, a, _ = _random_captions(4, 30)
    fast = BleuCorpus(ids, refs, {"a": a})
    rng = np.random.default_rng(5)
    for _ in range(3):
        drawn = rng.integers(0, len(ids), len(ids))
        weights = np.bincount(drawn, minlength=len(ids)).astype(float)
        gts = {n: refs[ids[j]] for n, j in enumerate(drawn)}
        res = {n: [a[ids[j]]] for n, j in enumerate(drawn)}
        official, _ = Bleu(4).compute_score(gts, res, verbose=0)
        got = fast.scores(weights)["a"]
        for k in range(4):
            assert got[f"BLEU-{k + 1}"] == pytest.approx(100 * official[k], rel=1e-9, abs=1e-12)
