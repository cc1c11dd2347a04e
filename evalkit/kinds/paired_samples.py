"""Per-sample scores of two runs lined up by sample id, for compare's paired bootstrap."""

from __future__ import annotations

import numpy as np

from evalkit.core.errors import NotComparableError


def aligned_ids(base, cand, prefix: str = "") -> list[str]:
    """The sample ids (with ``prefix``) scored in both runs, in the baseline's order; both must hold the same."""
    ids_b = [i for i in base.sample_scores() if i.startswith(prefix)]
    ids_c = {i for i in cand.sample_scores() if i.startswith(prefix)}
    if set(ids_b) != ids_c:
        only_one = sorted(set(ids_b) ^ ids_c)
        difference = {"field": "sample_scores.jsonl ids", "baseline": len(ids_b), "candidate": len(ids_c),
                      "why": f"{len(only_one)} sample ids in only one run (first: {only_one[0]})"}
        raise NotComparableError(f"runs are not comparable: {difference['why']}", [difference])
    return ids_b


def score_column(run, ids: list[str], metric: str) -> np.ndarray | None:
    """One per-sample score of ``ids`` as an array, or None when any sample lacks it."""
    scores = run.sample_scores()
    values = [scores[i].get(metric) for i in ids]
    if any(v is None for v in values):
        return None
    return np.asarray(values, dtype=np.float64)


def run_clusters(run, ids: list[str], prefix: str = "") -> list:
    """Each sample's cluster (its kind's ``cluster_key`` in predictions.jsonl, e.g. the image file); a sample
    without one is its own cluster."""
    key = run.task_kind.cluster_key
    preds = run.predictions()
    return [(preds.get(i[len(prefix):]) or {}).get(key) or f"sample:{i}" for i in ids]
