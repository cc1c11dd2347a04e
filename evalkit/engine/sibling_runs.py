"""A run's headline beside the same model's latest run of a sibling task (chat vs single-turn VQA)."""

from __future__ import annotations

import json
from pathlib import Path

from evalkit.core.scores import ScoreResult
from evalkit.engine.run_record import RUN_FILE


def compare_with_sibling(model_dir: Path, other_task: str, header: dict, scores: ScoreResult) -> dict:
    """The headline of the latest run of ``other_task`` on the same data and weights, and the difference."""
    candidates = []
    for run_file in (model_dir / other_task).glob(f"*/{RUN_FILE}"):
        other = json.loads(run_file.read_text())
        theirs = other.get("journal_header", {})
        if theirs.get("data") == header["data"] and theirs.get("weights_sha256") == header["weights_sha256"]:
            candidates.append(other)
    if not candidates:
        return {"task": other_task, "note": f"no {other_task} run on the same data and weights to compare with"}
    default_protocol = [r for r in candidates if not r.get("overrides")]  # prefer the task's own protocol
    latest = max(default_protocol or candidates, key=lambda r: r["created"])
    name = scores.headline
    theirs = latest["metrics"][name]["value"]
    return {"task": other_task, "run_id": latest["run_id"], "metric": name, "other": theirs,
            "this": scores.metrics[name], "difference": round(scores.metrics[name] - theirs, 4)}
