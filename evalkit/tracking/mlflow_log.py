"""Log a run to MLflow, through MLflow's own client (needs the `mlflow` extra).

Where: MLflow's standard variables, ``MLFLOW_TRACKING_URI`` (a server, or a local store) and
``MLFLOW_EXPERIMENT_NAME`` (default ``evalkit``). One evalkit run is one MLflow run, found again by its
``evalkit.run_key`` tag, so logging the same run twice (or a resumed run) updates it instead of adding another.
"""

from __future__ import annotations

import math
import os
import time

from evalkit.tracking.run_summary import RunSummary, thumbnail

DEFAULT_EXPERIMENT = "evalkit"
SAMPLES_TABLE = "samples.json"
# MLflow retries an unreachable server with exponential back-off (7 tries by default, minutes in all); an
# evaluation should not wait that long to say its tracker is down. A user's own settings win.
BOUNDED_HTTP = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


def log_to_mlflow(summary: RunSummary) -> dict:
    """Create or update the MLflow run of ``summary``; returns where it went (tracking URI, experiment, run id)."""
    for name, value in BOUNDED_HTTP.items():
        os.environ.setdefault(name, value)
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment_id = _experiment_id(client, os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT)
    run = _find_run(client, experiment_id, summary.key)
    if run is None:
        run = client.create_run(experiment_id, run_name=summary.name, tags=summary.tags)
    run_id = run.info.run_id
    known = dict(run.data.params)
    params = [Param(k, v) for k, v in summary.params.items() if k not in known]
    changed = {f"evalkit.param_changed.{k}": v for k, v in summary.params.items() if k in known and known[k] != v}
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0) for k, v in summary.metrics.items()]
    tags = [RunTag(k, v) for k, v in {**summary.tags, **changed}.items()]
    for start in range(0, max(len(params), len(metrics), len(tags)), 100):  # MLflow's log_batch limit: 100 params
        client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100],
                         tags=tags[start:start + 100])
    for path in summary.artifacts:
        client.log_artifact(run_id, str(path))  # the same path overwrites: re-logging leaves one copy
    if summary.samples and not any(a.path == SAMPLES_TABLE for a in client.list_artifacts(run_id)):
        client.log_table(run_id, data=_table(summary.samples), artifact_file=SAMPLES_TABLE)  # log_table appends
    client.set_terminated(run_id, "FINISHED")
    return {"status": "ok", "tracking_uri": mlflow.get_tracking_uri(), "experiment_id": experiment_id,
            "run_id": run_id}


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else client.create_experiment(name)


def _find_run(client, experiment_id: str, key: str):
    quoted = key.replace("\\", "\\\\").replace("'", "\\'")
    found = client.search_runs([experiment_id], filter_string=f"tags.`evalkit.run_key` = '{quoted}'",
                               max_results=1)
    return found[0] if found else None


def _table(samples: list[dict]) -> dict:
    """The sample rows as MLflow's column dict; PIL images become image cells in the MLflow UI."""
    columns = {name: [row[name] for row in samples] for name in samples[0] if name != "image"}
    columns["score"] = [None if isinstance(s, float) and math.isnan(s) else s for s in columns["score"]]
    columns["thumbnail"] = [thumbnail(row["image"]) for row in samples]
    return columns
