"""A new task kind is one module in evalkit/kinds/ plus a task file: run, score, record, compare and report
all work with it, and nothing else in evalkit is edited.

The test writes an exact-match QA kind (the shape of GQA's metric) as a module of the evalkit.kinds
package (a temporary folder added to the package's path, as a new file in evalkit/kinds/ would be),
and a task file that uses it on the bundled shapes questions.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli

KIND_MODULE = '''
"""Exact match: 100 when the answer equals the most common reference answer (lower-cased), else 0."""

from collections import Counter
from pathlib import Path

from evalkit.core.atomic_files import write_json_atomic
from evalkit.core.scores import ScoreResult
from evalkit.core.task_kind import PairedStatistics, ScoreHistogram
from evalkit.kinds.generation import GenerationKind
from evalkit.kinds.paired_samples import aligned_ids, score_column
from evalkit.metrics.bootstrap import ratio_diff


def _target(references):
    return Counter(r.strip().lower() for r in references).most_common(1)[0][0]


class ExactMatchKind(GenerationKind):
    name = "exact-match"
    headline_metrics = ("exact_match",)
    report_order = 5
    sample_score = "exact_match"
    histogram = ScoreHistogram("{task}: per-question exact match", "% of questions",
                               (("wrong", -1, 50), ("right", 50, 101)))
    references_label = "answers"
    shows_prompt = True

    def score(self, job, output):
        per_sample = {}
        for s in job.sample_set.samples:
            answer = output.predictions[s.id].prediction.strip().lower()
            per_sample[s.id] = {"exact_match": 100.0 * (answer == _target(s.references))}
        mean = sum(v["exact_match"] for v in per_sample.values()) / len(per_sample)
        return ScoreResult({"exact_match": mean}, per_sample, "exact_match")

    def write_official_file(self, run_dir, sample_set, predictions):
        path = Path(run_dir) / "exact_match_results.json"
        write_json_atomic(path, [{"questionId": s.id, "prediction": predictions[s.id].prediction}
                                 for s in sample_set.samples])
        return path

    def paired_statistics(self, base, cand, metrics):
        ids = aligned_ids(base, cand)
        stats = PairedStatistics(unit_sizes={"questions": len(ids)})
        b, c = score_column(base, ids, "exact_match"), score_column(cand, ids, "exact_match")
        for name in metrics:
            stats.functions[name], stats.unit[name] = ratio_diff("questions", b, c), "questions"
            stats.method[name] = "mean of per-question exact match"
        return stats


EXACT_MATCH = ExactMatchKind()
'''

TASK_FILE = '''
from evalkit.core.task_spec import TaskSpec
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.demo.bundled import SHAPES_DIR
from evalkit.kinds.exact_match import EXACT_MATCH
from evalkit.tasks.shapes import SHAPES_VQA, SHAPES_VQA_FAMILIES, VQA_COLUMNS

TASKS = [TaskSpec(name="shapes-exact", version="1", kind=EXACT_MATCH, description="exact match on shapes",
                  protocol=SHAPES_VQA, family_overrides=SHAPES_VQA_FAMILIES, load_data=load_vqa_set,
                  default_split="test", data_help="the shapes folder", default_data=str(SHAPES_DIR),
                  columns=VQA_COLUMNS, default_model="blip2-tiny-opt")]
'''


@pytest.fixture
def new_kind(tmp_path, monkeypatch) -> Path:
    """The kind module inside the evalkit.kinds package, and a folder with the task file."""
    import evalkit.kinds

    kind_dir, task_dir = tmp_path / "kinds", tmp_path / "tasks"
    kind_dir.mkdir()
    task_dir.mkdir()
    (kind_dir / "exact_match.py").write_text(KIND_MODULE)
    (task_dir / "shapes_exact.py").write_text(TASK_FILE)
    monkeypatch.setattr(evalkit.kinds, "__path__", [*evalkit.kinds.__path__, str(kind_dir)])
    monkeypatch.setattr(evalkit.kinds, "_KINDS", {})
    yield task_dir
    import sys

    sys.modules.pop("evalkit.kinds.exact_match", None)


def _independent_exact_match(run_dir: Path) -> float:
    lines = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    right = [line["prediction"].strip().lower() ==
             Counter(r.strip().lower() for r in line["references"]).most_common(1)[0][0] for line in lines]
    return 100.0 * sum(right) / len(right)


def test_a_new_kind_runs_scores_compares_and_reports(new_kind, tmp_path, capsys):
    results = tmp_path / "results"
    run_dirs = {}
    for model in ("blip2-tiny-opt", "blip2-tiny-t5"):
        code, out, err = run_cli(["run", "shapes-exact", "-m", model, "--include-path", str(new_kind), "--limit", "60",
                                  "-q", "--results", str(results), "--json"], capsys)
        assert code == 0, err
        record = json.loads(out)
        run_dir = results / model / "shapes-exact" / record["run_id"]
        run_dirs[model] = run_dir
        assert record["task"]["kind"] == "exact-match" and record["headline_metric"] == "exact_match"
        assert record["metrics"]["exact_match"]["value"] == pytest.approx(_independent_exact_match(run_dir))
        assert record["official_predictions_file"] == "exact_match_results.json"
        official = json.loads((run_dir / "exact_match_results.json").read_text())
        assert len(official) == 60 and {"questionId", "prediction"} <= set(official[0])
    assert 0 < record["metrics"]["exact_match"]["value"] <= 100  # the tiny models answer most shapes questions

    code, out, err = run_cli(["compare", str(run_dirs["blip2-tiny-opt"]), str(run_dirs["blip2-tiny-t5"]),
                              "--allow-protocol-change", "--n-boot", "200", "--json"], capsys)
    assert code in (0, 1), err
    comparison = json.loads(out)
    (row,) = comparison["metrics"]
    assert row["metric"] == "exact_match" and row["ci_low"] is not None and row["ci_low"] <= row["difference"]
    assert row["difference"] == pytest.approx(_independent_exact_match(run_dirs["blip2-tiny-t5"])
                                              - _independent_exact_match(run_dirs["blip2-tiny-opt"]))

    code, out, err = run_cli(["report", str(results), "--format", "json", "--no-write"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert report["tasks"] == [{"name": "shapes-exact", "kind": "exact-match", "metrics": ["exact_match"]}]
    html = (results / "report.html").read_text()
    assert "shapes-exact: per-question exact match" in html and "answers:" in html
