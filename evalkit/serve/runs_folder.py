"""What the "Runs" tab reads: the results folder, re-read on every request so new runs appear without a restart.

A run is named by its folder relative to the results folder; a name from the browser that leads outside it
(``..``, an absolute path, a symbolic link out) is refused. The leaderboard is the table `evalkit report`
builds, a run's samples are the rows its HTML gallery shows, and a comparison is `evalkit compare`'s own
result (:func:`evalkit.analysis.compare.compare_runs`), rendered by its own Markdown renderer.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evalkit.analysis.results_index import RUN_FILE, RunInfo, find_runs, load_run
from evalkit.core.errors import EvalkitError

SORTS = ("worst first", "best first", "failed only", "by id")
SAMPLE_COLUMNS = ["id", "score", "status", "question / prompt", "references", "prediction"]


class RunsFolder:
    """The finished runs below one results folder."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def runs(self) -> list[RunInfo]:
        """Every finished run, newest first ([] while the folder does not exist yet)."""
        if not self.root.is_dir():
            return []
        return sorted(find_runs(self.root, warn=lambda _: None), key=lambda r: (r.created, str(r.path)),
                      reverse=True)

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) for each run: ``model · task · run id`` and the folder relative to the root."""
        return [(f"{r.model} · {r.task} · {r.run_id}", self.name(r)) for r in self.runs()]

    def name(self, run: RunInfo) -> str:
        return run.path.resolve().relative_to(self.root).as_posix()

    def run(self, name: str | None) -> RunInfo:
        """The run folder ``name`` (relative to the results folder), never one outside it."""
        if not name:
            raise EvalkitError("choose a run")
        candidate = (self.root / name).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise EvalkitError(f"{name!r} is outside the results folder")
        if not (candidate / RUN_FILE).is_file():
            raise EvalkitError(f"no finished run {name!r} in the results folder")
        return load_run(candidate)

    def leaderboard(self, filter_text: str = "") -> tuple[pd.DataFrame, str]:
        """The `evalkit report` table (rows whose text holds every word of ``filter_text``) and its footnotes."""
        from evalkit.analysis.report import build_report, display_frame, footnotes

        if not self.runs():
            return pd.DataFrame({"model": []}), f"no finished runs below {self.root} yet"
        report = build_report(self.root)
        frame = display_frame(report)
        words = filter_text.lower().split()
        if words:
            text = frame.astype(str).agg(" ".join, axis=1).str.lower()
            keep = text.apply(lambda row: all(word in row for word in words))
            frame = frame[keep]
        notes = "\n".join(f"- {note}" for note in footnotes(report))
        return frame.reset_index(drop=True), notes

    def samples(self, name: str, sort: str = SORTS[0]) -> pd.DataFrame:
        """A run's samples: id, per-sample score, status, question or prompt, references, prediction."""
        from evalkit.analysis.report_html import sample_rows

        run = self.run(name)
        kind = run.task_kind
        rows = sample_rows(run)
        if sort == "failed only":
            rows = [r for r in rows if r["status"] != "ok"]
        if sort in ("worst first", "best first"):
            missing = float("inf") if sort == "worst first" else float("-inf")
            rows = sorted(rows, key=lambda r: r["score"] if r["score"] is not None else missing,
                          reverse=sort == "best first")
        return pd.DataFrame([[r["id"], r["label"], r["status"], r["prompt"], kind.references_text(r["references"]),
                              r["prediction"]] for r in rows], columns=SAMPLE_COLUMNS)

    def sample_image(self, name: str, sample_id: str) -> Path | None:
        """The image file of one sample (found as the HTML report finds it), or None."""
        from evalkit.analysis.report_html import Thumbnails

        run = self.run(name)
        line = run.predictions().get(str(sample_id))
        if line is None:
            raise EvalkitError(f"no sample {sample_id!r} in run {name}")
        base = (run.record.get("provenance") or {}).get("working_directory", "")
        return Thumbnails().resolve(str(line.get("image", "")), run.path, base)

    def compare(self, baseline: str, candidate: str, allow_protocol_change: bool = False) -> dict:
        """`evalkit compare BASELINE CANDIDATE`'s result, as its library function returns it."""
        from evalkit.analysis.compare import compare_runs

        return compare_runs(self.run(baseline), self.run(candidate), allow_protocol_change=allow_protocol_change)


def most_changed(result: dict, limit: int = 8) -> list[dict]:
    """The changed samples of a comparison, largest score change first (whatever fields each carries)."""
    changed = (result.get("changed_samples") or {}).get("samples") or []

    def change(sample: dict) -> float:
        before, after = sample.get("baseline_score"), sample.get("candidate_score")
        if isinstance(before, (int, float)) and isinstance(after, (int, float)):
            return abs(after - before)
        return 0.0

    return sorted(changed, key=change, reverse=True)[:limit]
