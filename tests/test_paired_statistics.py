"""Clustered statistics: the cluster bootstrap, the exact sign test and clustered standard errors, each checked
against an independent source (scipy, closed forms, a plain-numpy bootstrap written here)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scipy.stats import binomtest

from evalkit.metrics.bootstrap import cluster_index, paired_bootstrap, ratio_diff
from evalkit.metrics.paired_tests import flips, sign_test_p
from evalkit.metrics.standard_error import MeanPart, clustered_standard_error, mean_standard_error


@pytest.mark.parametrize("improved,regressed", [(0, 0), (1, 0), (9, 1), (1, 9), (5, 5), (12, 3), (30, 17),
                                                (0, 25), (100, 80), (7, 8)])
def test_sign_test_matches_scipy_binomtest(improved, regressed):
    n = improved + regressed
    expected = 1.0 if n == 0 else binomtest(improved, n, 0.5, alternative="two-sided").pvalue
    assert sign_test_p(improved, regressed) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_flips_count_items_and_clusters_by_hand():
    # image A: +100, 0 (mean +50: improved); image B: -100, -100 (regressed); image C: +30, -30 (mean 0: tied)
    diffs = {"1": 100.0, "2": 0.0, "3": -100.0, "4": -100.0, "5": 30.0, "6": -30.0}
    clusters = {"1": "A", "2": "A", "3": "B", "4": "B", "5": "C", "6": "C"}
    result = flips(diffs, clusters)
    assert result["items"] == {"improved": 2, "regressed": 3, "tied": 1,
                               "p_value": pytest.approx(binomtest(2, 5, 0.5).pvalue)}
    assert result["clusters"] == {"improved": 1, "regressed": 1, "tied": 1, "p_value": pytest.approx(1.0)}


def test_standard_error_of_singletons_is_the_usual_sem():
    rng = np.random.default_rng(1)
    y = rng.uniform(0, 100, size=37).tolist()
    se, g = mean_standard_error(y, list(range(37)))
    assert g == 37
    assert se == pytest.approx(statistics.stdev(y) / np.sqrt(37), rel=1e-12)


def test_clustered_standard_error_of_equal_clusters_is_the_sem_of_cluster_means():
    # closed form for G clusters of equal size: SE = stdev(cluster means) / sqrt(G)
    rng = np.random.default_rng(2)
    g, m = 25, 4
    y = rng.choice([0.0, 30.0, 60.0, 100.0], size=(g, m))
    labels = np.repeat(np.arange(g), m)
    se, clusters = mean_standard_error(y.ravel().tolist(), labels.tolist())
    assert clusters == g
    assert se == pytest.approx(statistics.stdev(y.mean(axis=1).tolist()) / np.sqrt(g), rel=1e-12)
    unclustered, _ = mean_standard_error(y.ravel().tolist(), list(range(g * m)))
    assert se != pytest.approx(unclustered, rel=1e-3)


def test_standard_error_of_a_mean_of_two_means_matches_a_plain_cluster_bootstrap():
    """retrieval's r_mean: the mean of a recall over images and a recall over captions that share the images"""
    rng = np.random.default_rng(3)
    g, per = 60, 5
    image_hit = rng.random(g) < 0.6
    text_hit = (rng.random((g, per)) < 0.3) | image_hit[:, None]  # captions of a found image are found more
    parts = [MeanPart(0.5, 100.0 * image_hit, list(range(g))),
             MeanPart(0.5, 100.0 * text_hit.ravel(), np.repeat(np.arange(g), per).tolist())]
    se, _ = clustered_standard_error(parts)
    boot = []
    for _ in range(6000):  # plain cluster bootstrap, independent of evalkit's
        pick = rng.integers(0, g, size=g)
        boot.append(0.5 * 100.0 * image_hit[pick].mean() + 0.5 * 100.0 * text_hit[pick].mean())
    expected = float(np.std(boot, ddof=1)) * np.sqrt(g / (g - 1))  # CR1's small-sample factor
    assert se == pytest.approx(expected, rel=0.06)


def correlated_set(g: int = 60, m: int = 5, seed: int = 0):
    """Per-question accuracy differences where the questions about one image mostly move together."""
    rng = np.random.default_rng(seed)
    image_effect = rng.choice([-100.0, 0.0, 0.0, 100.0], size=g)
    noise = rng.choice([0.0, 0.0, 0.0, 0.0, -100.0, 100.0], size=(g, m))
    base = np.full((g, m), 50.0)
    cand = np.clip(base + image_effect[:, None] + noise, 0, 100)
    return base.ravel(), cand.ravel(), np.repeat(np.arange(g), m)


def test_cluster_bootstrap_resamples_images_and_widens_the_interval():
    base, cand, labels = correlated_set()
    g, n = labels.max() + 1, len(labels)
    fn = {"accuracy": ratio_diff("questions", base, cand)}
    clustered = paired_bootstrap(fn, {"questions": n}, {}, 4000, 0, 0.95,
                                 {"questions": cluster_index(labels.tolist())})["accuracy"]
    plain = paired_bootstrap(fn, {"questions": n}, {}, 4000, 0, 0.95)["accuracy"]
    diff = cand - base
    image_means = diff.reshape(g, -1).mean(axis=1)
    # closed forms (bootstrap SE of a mean of k iid units = population sd / sqrt(k))
    assert clustered.std_error == pytest.approx(np.std(image_means) / np.sqrt(g), rel=0.08)
    assert plain.std_error == pytest.approx(np.std(diff) / np.sqrt(n), rel=0.08)
    assert (clustered.high - clustered.low) > 1.5 * (plain.high - plain.low)


def test_cluster_index_numbers_labels_in_order_of_appearance():
    assert cluster_index(["b.png", "a.png", "b.png", "c.png", "a.png"]).tolist() == [0, 1, 0, 2, 1]


def test_verdict_mirrors_for_a_lower_is_better_metric():
    from evalkit.metrics.bootstrap import verdict

    assert verdict(-3.0, -1.0, 0.0) == "regression"
    assert verdict(-3.0, -1.0, 0.0, higher_is_better=False) == "improvement"
    assert verdict(0.5, 2.0, 0.0, higher_is_better=False) == "regression"
    assert verdict(-0.5, 2.0, 0.0, higher_is_better=False) == "no significant change"
