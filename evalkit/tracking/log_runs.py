"""Send finished runs to experiment trackers, and record in each run.json whether that worked.

A tracker that cannot be reached never fails or loses the evaluation: the outcome (ok, or failed and why) goes
into run.json's ``tracking`` section, and ``evalkit log RUN_DIR --to TRACKER`` can try again later.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
from pathlib import Path

from evalkit.core.atomic_files import write_json_atomic
from evalkit.core.errors import EvalkitError, closest_names

TRACKERS = {"mlflow": "mlflow", "wandb": "wandb"}  # tracker -> the extra (and module) it needs


def check_trackers(names: list[str]) -> list[str]:
    """The trackers named by --log-to/--to, each known and installed (checked before anything runs)."""
    for name in names:
        if name not in TRACKERS:
            raise EvalkitError(f"--log-to {name!r} is not a tracker evalkit logs to "
                               f"({', '.join(TRACKERS)}){closest_names(name, list(TRACKERS))}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise EvalkitError(f"--log-to {name} needs the {name} package: pip install 'evalkit[{TRACKERS[name]}]'")
    return list(dict.fromkeys(names))


def log_run(run_dir: str | Path, trackers: list[str]) -> dict[str, dict]:
    """Log the run in ``run_dir`` to each tracker; returns tracker -> outcome, also written to run.json."""
    from evalkit.tracking.run_summary import summarize_run

    summary = summarize_run(run_dir)
    outcomes = {}
    for tracker in trackers:
        try:
            outcome = _logger(tracker)(summary)
        except Exception as err:  # noqa: BLE001 - a tracker's failure is recorded, never the evaluation's
            outcome = {"status": "failed", "error": f"{type(err).__name__}: {_first_line(err)}"}
        outcome["logged_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        outcomes[tracker] = outcome
    _record(Path(summary.run_dir), outcomes)
    return outcomes


def _logger(tracker: str):
    if tracker == "mlflow":
        from evalkit.tracking.mlflow_log import log_to_mlflow

        return log_to_mlflow
    from evalkit.tracking.wandb_log import log_to_wandb

    return log_to_wandb


def _record(run_dir: Path, outcomes: dict[str, dict]) -> None:
    path = run_dir / "run.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["tracking"] = {**(record.get("tracking") or {}), **outcomes}
    write_json_atomic(path, record)


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else "")[:300]


def failure_lines(run_dir: Path, outcomes: dict[str, dict]) -> list[str]:
    """One warning line per tracker that failed, naming the run and how to retry."""
    return [f"logging {run_dir} to {tracker} failed ({outcome['error']}); the run is complete and recorded; "
            f"retry with: evalkit log {run_dir} --to {tracker}"
            for tracker, outcome in outcomes.items() if outcome.get("status") != "ok"]
