"""Standard errors of metrics that are means (or fixed linear combinations of means) of per-sample scores,
clustered by what the samples share (the questions about one image are not independent).

For a metric ``M = sum_m a_m * mean_m`` where ``mean_m`` averages the scores ``y_i`` of part ``m`` (its
``N_m`` items), each item belonging to a cluster ``c(i)``, the cluster-robust (CR1, "sandwich") estimate is

    z_c  = sum_m a_m * sum_{i in part m, c(i) = c} (y_i - mean_m) / N_m
    SE   = sqrt( G / (G - 1) * sum_c z_c ** 2 )          (G clusters)

the textbook linearisation of a ratio mean under cluster sampling (Stata's ``mean, vce(cluster)``;
Cameron & Miller 2015, "A Practitioner's Guide to Cluster-Robust Inference", eq. 11). With one item per
cluster it is the usual standard error of the mean, ``stdev(y) / sqrt(N)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import numpy as np


@dataclass(frozen=True)
class MeanPart:
    """One mean of a metric: its weight in the metric, the item scores and each item's cluster."""

    weight: float
    values: Sequence[float]
    clusters: Sequence[Hashable]


def clustered_standard_error(parts: Sequence[MeanPart]) -> tuple[float | None, int]:
    """(standard error, number of clusters) of ``sum(weight * mean(values))``; (None, G) with fewer than two
    clusters or an empty part."""
    influence: dict[Hashable, float] = {}
    for part in parts:
        values = np.asarray(part.values, dtype=np.float64)
        if len(values) == 0 or len(values) != len(part.clusters):
            return None, 0
        residual = part.weight * (values - values.mean()) / len(values)
        for cluster, r in zip(part.clusters, residual):
            influence[cluster] = influence.get(cluster, 0.0) + float(r)
    g = len(influence)
    if g < 2:
        return None, g
    z = np.fromiter(influence.values(), dtype=np.float64, count=g)
    return float(np.sqrt(g / (g - 1) * np.sum(z * z))), g


def mean_standard_error(values: Sequence[float], clusters: Sequence[Hashable]) -> tuple[float | None, int]:
    """(standard error, clusters) of ``mean(values)``; see the module docstring."""
    return clustered_standard_error([MeanPart(1.0, values, clusters)])
