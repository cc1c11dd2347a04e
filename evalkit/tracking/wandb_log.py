"""Log a run to Weights & Biases, through the `wandb` client (needs the `wandb` extra).

Where: W&B's standard variables (``WANDB_PROJECT``, default ``evalkit``; ``WANDB_MODE=offline`` writes a local
run that ``wandb sync`` uploads later, with no network; ``WANDB_DIR``). The W&B run id is derived from evalkit's
run key, so logging the same run twice resumes one W&B run instead of adding another.
"""

from __future__ import annotations

import hashlib
import os
import re

from evalkit.tracking.run_summary import RunSummary, thumbnail

DEFAULT_PROJECT = "evalkit"


def wandb_run_id(key: str) -> str:
    """A W&B run id for an evalkit run key: readable, within W&B's characters, unique per key."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", key.rsplit("/", 1)[-1])[:40]
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def log_to_wandb(summary: RunSummary) -> dict:
    """Create or resume the W&B run of ``summary`` and log it; returns its project, id and local folder."""
    import wandb

    run_id = wandb_run_id(summary.key)
    project = os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
    tags = [f"task:{summary.tags['evalkit.task']}"[:64], f"model:{summary.tags['evalkit.model']}"[:64],
            "reportable" if summary.tags["evalkit.reportable"] == "true" else "not-reportable"]
    if "evalkit.like_for_like" in summary.tags:
        tags.append("like-for-like" if summary.tags["evalkit.like_for_like"] == "true" else "not-like-for-like")
    run = wandb.init(project=project, id=run_id, name=summary.name, resume="allow", tags=tags,
                     config={**summary.params, "evalkit": summary.tags}, settings=wandb.Settings(silent=True))
    try:
        run.config.update({**summary.params, "evalkit": summary.tags}, allow_val_change=True)
        run.log(dict(summary.metrics))
        run.summary.update(summary.metrics)
        artifact = wandb.Artifact(name=f"evalkit-{run_id}", type="evalkit-run")
        for path in summary.artifacts:
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)
        if summary.samples:
            run.log({"samples": _table(wandb, summary.samples)})
        return {"status": "ok", "project": project, "run_id": run_id, "mode": run.settings.mode,
                "dir": str(run.dir)}
    finally:
        run.finish()


def _table(wandb, samples: list[dict]):
    columns = ["thumbnail"] + [name for name in samples[0] if name != "image"]
    rows = [[wandb.Image(thumbnail(row["image"]))] + [row[name] for name in columns[1:]] for row in samples]
    return wandb.Table(columns=columns, data=rows)
