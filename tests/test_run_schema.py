"""run.json has a versioned JSON Schema in the package; real records (this session's `evalkit run` of the bundled
tiny models) validate against it, and each metric carries its clustered standard error and direction."""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from pathlib import Path

import jsonschema
import pytest

import evalkit

SCHEMA = Path(evalkit.__file__).parent / "engine" / "run_record.schema.json"


def _schema() -> dict:
    return json.loads(SCHEMA.read_text(encoding="utf-8"))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_schema_is_a_valid_draft_2020_12_schema_and_versioned():
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    from evalkit.engine.run_record import SCHEMA_VERSION

    assert schema["properties"]["schema_version"] == {"const": SCHEMA_VERSION, **{
        k: v for k, v in schema["properties"]["schema_version"].items() if k != "const"}}


def test_real_run_records_validate(real_runs):
    validator = jsonschema.Draft202012Validator(_schema())
    kinds = set()
    for run_dir in real_runs.values():
        record = json.loads((run_dir / "run.json").read_text())
        errors = sorted(validator.iter_errors(record), key=str)
        assert not errors, (run_dir, [e.message for e in errors[:3]])
        kinds.add(record["task"]["kind"])
    assert kinds == {"caption", "vqa", "retrieval"}


@pytest.mark.parametrize("breakage", ["no std_error", "no higher_is_better", "string value", "bad fingerprint",
                                      "no metrics"])
def test_schema_rejects_records_missing_what_is_essential(real_runs, breakage):
    record = json.loads((real_runs[("shapes-vqa", "blip2-tiny-opt")] / "run.json").read_text())
    broken = copy.deepcopy(record)
    entry = broken["metrics"]["accuracy"]
    if breakage == "no std_error":
        del entry["std_error"]
    elif breakage == "no higher_is_better":
        del entry["higher_is_better"]
    elif breakage == "string value":
        entry["value"] = "97.9"
    elif breakage == "bad fingerprint":
        broken["protocol_fingerprint"] = "e44455b7"
    else:
        del broken["metrics"]
    jsonschema.validate(record, _schema())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, _schema())


def test_schema_lets_other_fields_be_added(real_runs):
    record = json.loads((real_runs[("shapes-vqa", "blip2-tiny-opt")] / "run.json").read_text())
    record["a_new_section"] = {"x": 1}
    record["metrics"]["accuracy"]["ci95"] = [1, 2]
    record["runtime"]["new_knob"] = True
    jsonschema.validate(record, _schema())


def test_vqa_accuracy_standard_error_is_clustered_by_image(real_runs):
    """Computed here from predictions.jsonl and sample_scores.jsonl with the closed form of a clustered
    (CR1) standard error of a mean: sqrt(G/(G-1) * sum_c (sum_{i in c} (y_i - mean))^2) / N. At least one real
    run (the chat runs, where the tiny models get some questions wrong) has a clustered SE that differs from the
    unclustered one, so the check sees whether the clustering happened."""
    import statistics

    differs = 0
    for (task, _), run_dir in real_runs.items():
        record = json.loads((run_dir / "run.json").read_text())
        if record["task"]["kind"] != "vqa":
            continue
        image = {line["id"]: line["image"] for line in _jsonl(run_dir / "predictions.jsonl")}
        scores = {line["id"]: line["scores"]["accuracy"] for line in _jsonl(run_dir / "sample_scores.jsonl")}
        mean = sum(scores.values()) / len(scores)
        residual = defaultdict(float)
        for qid, y in scores.items():
            residual[image[qid]] += y - mean
        g, n = len(residual), len(scores)
        assert g < n  # several questions per image in the shapes split: the clustering matters
        expected = (g / (g - 1) * sum(r * r for r in residual.values())) ** 0.5 / n
        entry = record["metrics"]["accuracy"]
        assert entry["std_error"] == pytest.approx(expected, rel=1e-9, abs=1e-12), (task, run_dir)
        assert entry["higher_is_better"] is True and f"{g} images" in entry["std_error_method"]
        unclustered = statistics.stdev(scores.values()) / n ** 0.5
        differs += abs(unclustered - expected) > 1e-6
    assert differs >= 1


def test_every_real_metric_has_a_standard_error_or_says_why_not(real_runs):
    for run_dir in real_runs.values():
        for name, entry in json.loads((run_dir / "run.json").read_text())["metrics"].items():
            assert entry["higher_is_better"] is True
            if entry["std_error"] is None:
                assert entry["std_error_method"], (run_dir, name)
            else:
                assert entry["std_error"] >= 0
