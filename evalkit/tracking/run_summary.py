"""What a tracker receives from one finished run folder: parameters, metrics, tags, artifacts and a sample table.

Every tracker (evalkit.tracking.mlflow_log, evalkit.tracking.wandb_log) logs this one summary, so MLflow and W&B
hold the same facts about a run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from evalkit.analysis.results_index import PREDICTIONS_FILE, RUN_FILE, SAMPLE_SCORES_FILE, RunInfo, load_run

SAMPLE_TABLE_ROWS = 16  # the worst-scored samples, as the report's gallery shows them first
THUMBNAIL_PX = 96


@dataclass
class RunSummary:
    """One run as a tracker sees it; ``key`` (evalkit's run id, with model and task) names the tracker run."""

    run_dir: Path
    key: str
    name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    artifacts: list[Path]
    samples: list[dict] = field(default_factory=list)


def summarize_run(run_dir: str | Path) -> RunSummary:
    """The tracker summary of the run in ``run_dir`` (its run.json must exist: a one-line error otherwise)."""
    run = load_run(run_dir)
    record = run.record
    return RunSummary(run_dir=run.path, key=tracker_key(run), name=f"{run.model} · {run.task} · {run.run_id}",
                      params=_params(record), metrics=_metrics(record), tags=_tags(run),
                      artifacts=_artifacts(run), samples=sample_table(run))


def tracker_key(run: RunInfo) -> str:
    """The tracker run's identity: the same evalkit run (resumed, re-logged) always maps to the same tracker run."""
    return f"{run.model}/{run.task}/{run.run_id}"


def _params(record: dict) -> dict[str, str]:
    task, model = record.get("task") or {}, record.get("model") or {}
    params = {"task": task.get("name"), "task_version": task.get("version"), "task_kind": task.get("kind"),
              "model": model.get("name"), "model_source": model.get("source"), "model_family": model.get("family"),
              "model_revision": model.get("revision"), "weights_sha256": model.get("weights_sha256"),
              "protocol_fingerprint": record.get("protocol_fingerprint"),
              "data_split": (record.get("data") or {}).get("split"),
              "dtype": (record.get("runtime") or {}).get("dtype"), "device": (record.get("runtime") or {}).get("device")}
    for name, value in (record.get("protocol") or {}).items():
        params[f"protocol.{name}"] = value
    for name, version in ((record.get("provenance") or {}).get("packages") or {}).items():
        params[f"version.{name}"] = version
    return {name: _text(value) for name, value in params.items() if value is not None}


def _metrics(record: dict) -> dict[str, float]:
    """Every metric of run.json (headline and breakdowns such as accuracy/yes/no), with its standard error as
    ``NAME/std_error`` where run.json carries one; a NaN or missing value is left out (trackers reject NaN)."""
    out = {}
    for name, metric in (record.get("metrics") or {}).items():
        metric = metric if isinstance(metric, dict) else {"value": metric}
        for suffix, value in (("", metric.get("value")), ("/std_error", metric.get("std_error"))):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                out[name + suffix] = float(value)
    counts = record.get("counts") or {}
    for name in ("samples", "failed", "empty_predictions"):
        if isinstance(counts.get(name), int):
            out[f"count/{name}"] = float(counts[name])
    return out


def _tags(run: RunInfo) -> dict[str, str]:
    record = run.record
    tags = {"evalkit.run_key": tracker_key(run), "evalkit.run_id": run.run_id, "evalkit.task": run.task,
            "evalkit.model": run.model, "evalkit.reportable": str(run.reportable).lower(),
            "evalkit.headline_metric": run.headline, "evalkit.run_dir": str(run.path.resolve())}
    like = _like_for_like(run)
    if like is not None:
        tags["evalkit.like_for_like"] = str(like).lower()
    if run.not_reportable_reasons:
        tags["evalkit.not_reportable_reasons"] = "; ".join(run.not_reportable_reasons)[:5000]
    git = (record.get("provenance") or {}).get("git_commit")
    if git:
        tags["evalkit.git_commit"] = str(git)
    return tags


def _like_for_like(run: RunInfo) -> bool | None:
    """Whether the run reproduces the setting of a published reference number for its model, task and split
    (None when there is no reference to be like-for-like with)."""
    from evalkit.analysis.reference_numbers import like_for_like_differences, references_for_run

    refs = references_for_run(run.record)
    if not refs:
        return None
    return any(not like_for_like_differences(ref, run.record) for ref in refs)


def _artifacts(run: RunInfo) -> list[Path]:
    names = [RUN_FILE, PREDICTIONS_FILE, SAMPLE_SCORES_FILE]
    official = run.record.get("official_predictions_file")
    if official:
        names.append(str(official))
    return [run.path / name for name in names if (run.path / name).is_file()]


def sample_table(run: RunInfo, rows: int = SAMPLE_TABLE_ROWS) -> list[dict]:
    """The ``rows`` worst-scored samples (the report gallery's order): id, image path (resolved), prompt,
    prediction, references and score. The image is a path; each tracker makes its own thumbnail."""
    from evalkit.analysis.report_html import Thumbnails, sample_rows

    base_dir = str((run.record.get("provenance") or {}).get("working_directory") or "")
    scored = sorted(sample_rows(run), key=lambda r: (r["score"] is None, r["score"] if r["score"] is not None else 0))
    table = []
    for row in scored[:rows]:
        image = Thumbnails().resolve(str(row["image"]), run.path, base_dir)
        table.append({"id": row["id"], "image": str(image) if image else "", "prompt": row["prompt"],
                      "prediction": row["prediction"], "references": " / ".join(row["references"][:5]),
                      "score": row["score"] if row["score"] is not None else float("nan")})
    return table


def thumbnail(path: str, size: int = THUMBNAIL_PX):
    """A small RGB PIL image of ``path`` (a grey square when it cannot be read: a table cell, never an error)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            img.thumbnail((size, size))
            return img
    except Exception:  # noqa: BLE001
        return Image.new("RGB", (size, size), (200, 200, 200))


def _text(value) -> str:
    """A parameter value as text (trackers store parameters as strings; MLflow caps them at 6000 characters)."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text[:6000]
