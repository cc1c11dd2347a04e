"""Exact paired tests for two runs scored on the same samples: the sign test on flips.

A *flip* is a sample (or a cluster of samples, e.g. the questions about one image) whose score went up
(improved) or down (regressed) from the baseline to the candidate; ties are dropped. Under "no difference"
each flip is an improvement with probability 1/2, so the number of improvements among ``n`` flips is
Binomial(n, 1/2) and the two-sided p-value is

    p = min(1, 2 * sum_{i <= min(k, n - k)} C(n, i) / 2**n)

(the exact binomial test at p = 1/2; with 0/1 scores on items it is McNemar's exact test, whose statistic is
the discordant pairs). Written by hand because it is six lines of exact integer arithmetic and scipy is not a
dependency of evalkit; tests check it against ``scipy.stats.binomtest``.

Example: 9 improved, 1 regressed -> p = 2 * (1 + 10) / 1024 = 0.0215.
"""

from __future__ import annotations

from math import comb
from typing import Hashable, Mapping, Sequence


def sign_test_p(improved: int, regressed: int) -> float:
    """Two-sided exact binomial p-value of ``improved`` successes in ``improved + regressed`` trials at 1/2."""
    n = improved + regressed
    if n == 0:
        return 1.0
    k = min(improved, regressed)
    tail = sum(comb(n, i) for i in range(k + 1))
    return min(1.0, 2.0 * tail / 2 ** n)


def flips(differences: Mapping[str, float], clusters: Mapping[str, Hashable] | None = None) -> dict:
    """Improved / regressed / tied counts of ``differences`` (id -> candidate - baseline, higher is better), per
    item and per cluster (the mean difference of a cluster's items), each with its sign-test p-value."""
    items = _count(differences.values())
    out = {"items": {**items, "p_value": sign_test_p(items["improved"], items["regressed"])}}
    if clusters is not None:
        sums: dict[Hashable, list[float]] = {}
        for sample_id, diff in differences.items():
            sums.setdefault(clusters[sample_id], []).append(diff)
        means = [sum(v) / len(v) for v in sums.values()]
        counted = _count(means)
        out["clusters"] = {**counted, "p_value": sign_test_p(counted["improved"], counted["regressed"])}
    return out


def _count(values: Sequence[float] | object) -> dict:
    values = list(values)  # type: ignore[arg-type]
    eps = 1e-9  # per-sample scores are sums of floats: a zero difference may come out as 1e-15
    improved = sum(1 for v in values if v > eps)
    regressed = sum(1 for v in values if v < -eps)
    return {"improved": improved, "regressed": regressed, "tied": len(values) - improved - regressed}
