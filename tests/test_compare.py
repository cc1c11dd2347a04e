"""`evalkit compare`: regressions (exit 1), no change (exit 0), not comparable (exit 2), --reference."""

from __future__ import annotations

import json
import shutil

import pytest

from make_runs import answers_with_accuracy, caption_run, caption_set, cli, retrieval_run, vqa_run, vqa_set

N_BOOT = "300"
# synthetic records are derived from real `evalkit run` records of this session (tests/make_runs.py)
pytestmark = pytest.mark.usefixtures("real_runs")


def _gold(n: int = 200):
    gold, types, questions = vqa_set(n)
    return gold, types, questions


@pytest.fixture
def vqa_pair(tmp_path):
    """A baseline with 150/200 right and a clearly worse candidate with 90/200 right (same data, protocol)."""
    gold, types, questions = _gold()
    base = vqa_run(tmp_path / "results", "model-a", answers_with_accuracy(gold, 150), gold, answer_types=types,
                   questions=questions, run_id="base")
    cand = vqa_run(tmp_path / "results", "model-b", answers_with_accuracy(gold, 90), gold, answer_types=types,
                   questions=questions, run_id="cand", created="2025-02-01T00:00:00+00:00")
    return base, cand


def test_regression_exits_1(vqa_pair):
    base, cand = vqa_pair
    code, out, err = cli(["compare", base, cand, "--n-boot", N_BOOT])
    assert code == 1, (out, err)
    row = next(line for line in out.splitlines() if line.startswith("| accuracy |"))
    assert "regression" in row and "-30.00" in row
    assert "REGRESSION in accuracy" in out
    assert "Changed predictions: 60 of 200 samples" in out


def test_json_output_lists_every_changed_sample(vqa_pair):
    base, cand = vqa_pair
    code, out, _ = cli(["compare", base, cand, "--n-boot", N_BOOT, "--json", "--show-changed", "3"])
    assert code == 1
    result = json.loads(out)
    assert result["comparable"] and result["exit_code"] == 1
    assert result["changed_samples"]["count"] == 60 == len(result["changed_samples"]["samples"])
    accuracy = next(m for m in result["metrics"] if m["metric"] == "accuracy")
    assert accuracy["difference"] == pytest.approx(-30.0)
    assert accuracy["ci_low"] < -30.0 < accuracy["ci_high"] < 0
    assert accuracy["verdict"] == "regression"
    # per answer type: questions of that type only (answer types come from predictions' extra)
    by_type = {m["metric"]: m for m in result["metrics"]}
    assert by_type["accuracy/other"]["ci_low"] is not None
    assert by_type["accuracy/other"]["ci_low"] <= by_type["accuracy/other"]["difference"] <= \
        by_type["accuracy/other"]["ci_high"]


def test_swapped_runs_are_an_improvement_and_exit_0(vqa_pair):
    base, cand = vqa_pair
    code, out, _ = cli(["compare", cand, base, "--n-boot", N_BOOT, "--json"])
    assert code == 0
    result = json.loads(out)
    assert result["improvements"] and "accuracy" in result["improvements"] and not result["regressions"]


def test_seeded_output_is_reproducible(vqa_pair):
    base, cand = vqa_pair
    first = json.loads(cli(["compare", base, cand, "--n-boot", N_BOOT, "--json", "--seed", "3"])[1])
    again = json.loads(cli(["compare", base, cand, "--n-boot", N_BOOT, "--json", "--seed", "3"])[1])
    other = json.loads(cli(["compare", base, cand, "--n-boot", N_BOOT, "--json", "--seed", "4"])[1])
    assert first["metrics"] == again["metrics"]
    assert [m["ci_low"] for m in first["metrics"]] != [m["ci_low"] for m in other["metrics"]]


def _predictions(run_dir) -> dict[str, str]:
    lines = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    return {line["id"]: line["prediction"] for line in lines}


def test_real_runs_compare_on_their_own_files(real_runs, tmp_path):
    """Two models' real shapes-chat runs (`evalkit run`, this session): differences are the run.json ones,
    changed samples are the predictions that differ; a copy of a run compares as unchanged."""
    opt, t5 = real_runs[("shapes-chat", "blip2-tiny-opt")], real_runs[("shapes-chat", "blip2-tiny-t5")]
    base, cand = (json.loads((run_dir / "run.json").read_text()) for run_dir in (opt, t5))
    assert base["protocol_fingerprint"] != cand["protocol_fingerprint"]  # per-family protocols
    code, _, err = cli(["compare", opt, t5, "--n-boot", N_BOOT])
    assert code == 2 and "protocol_fingerprint differs" in err
    code, out, err = cli(["compare", opt, t5, "--n-boot", N_BOOT, "--json", "--allow-protocol-change"])
    assert code in (0, 1), err
    result = json.loads(out)
    rows = {m["metric"]: m for m in result["metrics"]}
    assert set(rows) == set(base["metrics"]) and "accuracy" in rows
    for name, entry in base["metrics"].items():
        assert rows[name]["difference"] == pytest.approx(cand["metrics"][name]["value"] - entry["value"], abs=1e-9)
    mine, theirs = _predictions(opt), _predictions(t5)
    assert set(mine) == set(theirs) and len(mine) == 12
    differing = {i for i in mine if mine[i] != theirs[i]}
    assert differing  # the chat task separates the two models (MODELS.md), so this is not vacuous
    assert {s["id"] for s in result["changed_samples"]["samples"]} == differing
    assert result["changed_samples"]["count"] == len(differing)
    assert result["exit_code"] == (1 if result["regressions"] else 0) == code
    copy = tmp_path / "copy"
    shutil.copytree(opt, copy)
    code, out, _ = cli(["compare", opt, copy, "--n-boot", N_BOOT, "--json"])
    same = json.loads(out)
    assert code == 0 and same["changed_samples"]["count"] == 0
    assert {m["metric"]: m["difference"] for m in same["metrics"]} == {name: 0 for name in base["metrics"]}


def test_tolerance_turns_a_small_regression_into_no_change(tmp_path):
    gold, types, questions = _gold(400)
    base = vqa_run(tmp_path, "a", answers_with_accuracy(gold, 400), gold, answer_types=types, run_id="a")
    cand = vqa_run(tmp_path, "b", answers_with_accuracy(gold, 392), gold, answer_types=types, run_id="b")
    code, out, _ = cli(["compare", base, cand, "--n-boot", N_BOOT, "--metric", "accuracy", "--json"])
    assert code == 1, out  # -2 points, CI clearly below 0
    code, out, _ = cli(["compare", base, cand, "--n-boot", N_BOOT, "--metric", "accuracy", "--tolerance", "5",
                        "--json"])
    assert code == 0
    assert json.loads(out)["metrics"][0]["verdict"] == "no significant change"


def test_identical_runs_exit_0_without_changes(vqa_pair, tmp_path):
    base, _ = vqa_pair
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    code, out, err = cli(["compare", base, copy, "--n-boot", N_BOOT])
    assert code == 0, (out, err)
    assert "Changed predictions: 0 of 200 samples" in out
    assert "no regression (exit 0)" in out
    result = json.loads(cli(["compare", base, copy, "--n-boot", N_BOOT, "--json"])[1])
    assert result["changed_samples"]["count"] == 0
    assert {m["metric"] for m in result["metrics"]} >= {"accuracy", "accuracy/yes/no", "accuracy/number",
                                                         "accuracy/other"}
    assert all(m["difference"] == 0 and m["verdict"] == "no significant change" for m in result["metrics"])


def test_different_data_exits_2_naming_the_field(tmp_path):
    gold, types, _ = _gold(30)
    base = vqa_run(tmp_path, "a", answers_with_accuracy(gold, 20), gold, answer_types=types, run_id="a")
    cand = vqa_run(tmp_path, "b", answers_with_accuracy(gold, 20), gold, answer_types=types, run_id="b",
                   data="other-annotations")
    code, out, err = cli(["compare", base, cand, "--n-boot", N_BOOT])
    assert code == 2
    assert "journal_header.data" in out and "journal_header.data differs" in err
    result = json.loads(cli(["compare", base, cand, "--json"])[1])
    assert not result["comparable"]
    assert [d["field"] for d in result["differences"]] == ["journal_header.data"]


def test_different_samples_exit_2(tmp_path):
    gold, types, _ = _gold(30)
    fewer = dict(list(gold.items())[:20])
    base = vqa_run(tmp_path, "a", answers_with_accuracy(gold, 20), gold, answer_types=types, run_id="a")
    cand = vqa_run(tmp_path, "b", answers_with_accuracy(fewer, 10), fewer, answer_types=types, run_id="b")
    code, _, err = cli(["compare", base, cand])
    assert code == 2 and "journal_header.sample_ids" in err


def test_different_task_exits_2(tmp_path):
    gold, types, _ = _gold(30)
    refs, good, _ = caption_set()
    base = vqa_run(tmp_path, "a", answers_with_accuracy(gold, 20), gold, answer_types=types, run_id="a")
    cand = caption_run(tmp_path, "a", good, refs, run_id="c")
    code, _, err = cli(["compare", base, cand])
    assert code == 2 and "task.name differs (vqav2 vs coco-caption" in err


def test_protocol_change_exits_2_unless_allowed(tmp_path):
    from evalkit.core.registry import get_task

    task = get_task("vqav2")
    default = task.protocol_for("opt").prompt_variant  # model "a" is an OPT model to make_runs
    (variant,) = [name for name in task.prompt_variants if name != default]
    gold, types, _ = _gold(200)
    base = vqa_run(tmp_path, "a", answers_with_accuracy(gold, 150), gold, answer_types=types, run_id="a")
    cand = vqa_run(tmp_path, "a", answers_with_accuracy(gold, 100), gold, answer_types=types, run_id="b",
                   overrides={"prompt": task.prompt_variants[variant], "prompt_variant": variant})
    code, _, err = cli(["compare", base, cand, "--n-boot", N_BOOT])
    assert code == 2 and "protocol_fingerprint differs" in err and "prompt_variant" in err
    code, out, _ = cli(["compare", base, cand, "--n-boot", N_BOOT, "--allow-protocol-change"])
    assert code == 1, out
    assert "protocols differ" in out and "--allow-protocol-change" in out


def test_different_vqa_scorer_exits_2(tmp_path):
    gold, types, _ = _gold(30)
    base = vqa_run(tmp_path, "a", answers_with_accuracy(gold, 20), gold, answer_types=types, run_id="a")
    cand = vqa_run(tmp_path, "b", answers_with_accuracy(gold, 20), gold, answer_types=types, run_id="b",
                   vqa_metric="lavis")
    code, _, err = cli(["compare", base, cand])
    assert code == 2 and "details.vqa_metric" in err


@pytest.mark.parametrize("java_state", ["available", "missing"])
def test_caption_regression(tmp_path, monkeypatch, java_state):
    from evalkit.core.errors import EvalkitError
    from evalkit.metrics import caption_metrics

    if java_state == "missing":
        def no_java():
            raise EvalkitError("COCO caption metrics need Java but no 'java' is on PATH")

        monkeypatch.setattr(caption_metrics, "require_java", no_java)
    else:
        caption_metrics.require_java()  # CI installs Java; its absence is a failure, not a skip
    refs, good, bad = caption_set(24)
    # the candidate gets every third caption wrong
    worse = {i: (bad[i] if n % 3 == 0 else good[i]) for n, i in enumerate(good)}
    base = caption_run(tmp_path, "a", good, refs, run_id="a")
    cand = caption_run(tmp_path, "b", worse, refs, run_id="b")
    code, out, err = cli(["compare", base, cand, "--n-boot", "200", "--json"])
    assert code == 1, (out, err)
    result = json.loads(out)
    rows = {m["metric"]: m for m in result["metrics"]}
    assert rows["CIDEr"]["verdict"] == "regression"
    assert rows["CIDEr"]["ci_low"] <= rows["CIDEr"]["difference"] <= rows["CIDEr"]["ci_high"]
    assert result["changed_samples"]["count"] == 8
    if java_state == "missing":
        assert rows["CIDEr"]["method"] == ("mean of per-image scores (not re-scored as a corpus metric: "
                                           "Java not found for the PTB tokenizer)")
    else:
        assert rows["CIDEr"]["method"].startswith("corpus CIDEr re-scored")
        assert rows["BLEU-4"]["method"].startswith("corpus BLEU re-scored")
        # exact re-scoring: the full-sample re-scored difference equals the official one
        assert rows["CIDEr"]["rescored_difference"] == pytest.approx(rows["CIDEr"]["difference"], abs=1e-6)
        assert rows["BLEU-4"]["rescored_difference"] == pytest.approx(rows["BLEU-4"]["difference"], abs=1e-6)
    assert rows["ROUGE-L"]["method"] == "mean of per-image scores"


def test_retrieval_units_are_image_and_text_queries(tmp_path):
    base = retrieval_run(tmp_path, "a", [0] * 60, [0] * 60, run_id="a")
    cand = retrieval_run(tmp_path, "b", [0] * 30 + [20] * 30, [0] * 60, run_id="b")
    code, out, _ = cli(["compare", base, cand, "--n-boot", N_BOOT, "--json"])
    assert code == 1
    result = json.loads(out)
    rows = {m["metric"]: m for m in result["metrics"]}
    assert result["units"] == {"image queries": 60, "text queries": 60}
    assert rows["txt_r1"]["verdict"] == "regression" and rows["txt_r1"]["unit"] == "image queries"
    assert rows["img_r1"]["verdict"] == "no significant change" and rows["img_r1"]["difference"] == 0
    assert rows["r_mean"]["verdict"] == "regression"
    assert result["changed_samples"]["count"] == 30


def test_task_and_models_pick_the_latest_runs(tmp_path):
    gold, types, _ = _gold(200)
    results = tmp_path / "results"
    vqa_run(results, "model-a", answers_with_accuracy(gold, 150), gold, answer_types=types, run_id="a-old",
            created="2025-01-01T00:00:00+00:00", data="old")
    vqa_run(results, "model-a", answers_with_accuracy(gold, 150), gold, answer_types=types, run_id="a-new",
            created="2025-03-01T00:00:00+00:00")
    vqa_run(results, "model-b", answers_with_accuracy(gold, 150), gold, answer_types=types, run_id="b-new",
            created="2025-03-01T00:00:00+00:00")
    code, out, err = cli(["compare", "--task", "vqav2", "--models", "model-a", "model-b", "--results", results,
                          "--n-boot", N_BOOT, "--json"])
    assert code == 0, (out, err)
    result = json.loads(out)
    assert result["baseline"]["run_id"] == "a-new" and result["candidate"]["run_id"] == "b-new"
    code, _, err = cli(["compare", "--task", "vqav2", "--models", "model-a", "nope", "--results", results])
    assert code == 2 and "no finished run of model 'nope'" in err


def test_reference_paper(tmp_path):
    gold, types, _ = _gold(20)
    run = vqa_run(tmp_path, "blip2-flan-t5-xl", answers_with_accuracy(gold, 13), gold, answer_types=types,
                  run_id="r")
    code, out, _ = cli(["compare", run, "--reference", "paper", "--json"])
    assert code == 0
    result = json.loads(out)
    (row,) = result["rows"]
    assert (row["metric"], row["value"], row["reference"]) == ("accuracy", 65.0, 63.1)
    assert row["difference"] == pytest.approx(1.9)
    assert "Table 2" in row["source_text"]
    code, out, _ = cli(["compare", run, "--reference", "all"])
    assert code == 0 and "63.13" in out and "+1.87" in out and "No confidence interval" in out


def test_reference_without_numbers_is_a_user_error(tmp_path):
    gold, types, _ = _gold(20)
    run = vqa_run(tmp_path, "blip2-opt-2.7b-coco", answers_with_accuracy(gold, 13), gold, run_id="r")
    code, _, err = cli(["compare", run, "--reference", "paper"])
    assert code == 2 and "no paper reference numbers" in err and "coco-caption/test" in err


def test_usage_errors(tmp_path, vqa_pair):
    base, _ = vqa_pair
    assert cli(["compare", base])[0] == 2
    assert cli(["compare", base, tmp_path / "missing"])[0] == 2
    assert cli(["compare", base, base, "--tolerance", "-1"])[0] == 2
    assert cli(["compare", base, base, "--metric", "CIDEr"])[0] == 2


def test_wired_cli_propagates_exit_codes(vqa_pair):
    """Through the real `evalkit` entry point, once evalkit/cli/main.py calls register(app)."""
    import subprocess
    import sys

    from evalkit.cli import main as main_cli

    names = {c.name or c.callback.__name__ for c in main_cli.app.registered_commands}
    assert "compare" in names
    base, cand = vqa_pair
    proc = subprocess.run([sys.executable, "-c", "from evalkit.cli.main import main; main()", "compare", str(base),
                           str(cand), "--n-boot", "100"], capture_output=True, text=True)
    assert proc.returncode == 1, (
        "`evalkit compare` printed a regression but the process exited "
        f"{proc.returncode}: evalkit.cli.main.main must exit with the code app(standalone_mode=False) returns "
        "(typer.Exit(code) is returned, not raised, in non-standalone mode)\n" + proc.stdout[-500:] + proc.stderr)


def test_vqa_bootstrap_resamples_images_and_keeps_the_question_interval_as_secondary(tmp_path):
    """40 images x 5 questions; the candidate gets every question about images 0-9 wrong. Per image the change is
    -100 (10 images) or 0 (30): the bootstrap SE of a mean of 40 such images is 100*sqrt(.25*.75/40) = 6.85,
    while treating the 200 questions as independent gives 100*sqrt(.25*.75/200) = 3.06 (closed forms)."""
    from scipy.stats import binomtest

    gold, types, questions = _gold(200)
    ids = list(gold)
    images = {i: f"images/img{k // 5}.png" for k, i in enumerate(ids)}
    base = vqa_run(tmp_path, "a", answers_with_accuracy(gold, 200), gold, answer_types=types, images=images,
                   run_id="a")
    cand = vqa_run(tmp_path, "b", {i: ("wrong" if k < 50 else gold[i][0]) for k, i in enumerate(ids)}, gold,
                   answer_types=types, images=images, run_id="b")
    code, out, err = cli(["compare", base, cand, "--n-boot", "2000", "--json"])
    assert code == 1, err
    result = json.loads(out)
    assert result["clusters"] == {"questions": {"by": "images", "count": 40}}
    row = next(m for m in result["metrics"] if m["metric"] == "accuracy")
    assert row["resampled"] == "images" and row["unit"] == "questions"
    assert row["std_error"] == pytest.approx(100 * (0.25 * 0.75 / 40) ** 0.5, rel=0.12)
    assert row["unclustered_ci"]["std_error"] == pytest.approx(100 * (0.25 * 0.75 / 200) ** 0.5, rel=0.12)
    assert row["ci_high"] - row["ci_low"] > 1.7 * (row["unclustered_ci"]["ci_high"] - row["unclustered_ci"]["ci_low"])
    flips = result["flips"]
    assert flips["regressed"] == ids[:50] and flips["improved"] == []
    assert flips["items"] == {"improved": 0, "regressed": 50, "tied": 150,
                              "p_value": pytest.approx(binomtest(0, 50, 0.5).pvalue)}
    assert flips["clusters"] == {"improved": 0, "regressed": 10, "tied": 30,
                                 "p_value": pytest.approx(binomtest(0, 10, 0.5).pvalue)}
    code, out, _ = cli(["compare", base, cand, "--n-boot", "300"])
    assert "200 questions resampled as 40 images (clusters)" in out
    assert "Secondary, questions resampled one by one" in out and "over images: 0 improved, 10 regressed" in out
