"""`evalkit report`: the model x task table in Markdown, CSV, JSON and HTML; reference numbers."""

from __future__ import annotations

import io
import json
import re
import shutil

import pandas as pd
import pytest

from make_runs import (answers_with_accuracy, caption_run, caption_set, cli, make_standard_results, retrieval_run,
                       vqa_run, vqa_set)

from evalkit.core.errors import EvalkitError
# synthetic records are derived from real `evalkit run` records of this session (tests/make_runs.py)
pytestmark = pytest.mark.usefixtures("real_runs")


@pytest.fixture(scope="module")
def standard(tmp_path_factory, real_runs):
    root = tmp_path_factory.mktemp("report")
    runs = make_standard_results(root)
    return root / "results", runs


def _md_rows(markdown: str) -> list[list[str]]:
    rows = []
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| model"):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


def _no_se(cell: str) -> str:
    """A cell without its ``± standard error`` (tested on its own in test_cells_show_the_recorded_standard_error)."""
    return re.sub(r" ± \d+\.\d\d", "", cell)


def _md_header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("| model"))
    return [c.strip() for c in line.strip().strip("|").split(" | ")]


def test_markdown_table_cells_references_and_marks(standard):
    results, _ = standard
    code, out, err = cli(["report", results, "--no-html"])
    assert code == 0, err
    header = _md_header(out)
    assert header == ["model", "coco-caption protocol", "coco-caption BLEU-4", "coco-caption CIDEr", "vqav2 protocol",
                      "vqav2 accuracy", "retrieval-coco protocol", "retrieval-coco txt_r1", "retrieval-coco img_r1",
                      "retrieval-coco r_mean"]
    rows = _md_rows(out)
    assert [r[0] for r in rows] == ["blip2-flan-t5-xl", "blip2-flan-t5-xl", "blip2-opt-2.7b-coco"]
    t5, t5_answer, opt = ({k: _no_se(v) for k, v in zip(header, r)} for r in rows)
    # paper Table 2: blip2-flan-t5-xl VQAv2 val 63.1
    assert re.fullmatch(r"65\.00 \(ref 63\.10 \[\d\], Δ \+1\.90\)", t5["vqav2 accuracy"])
    # paper Table 3: blip2-opt-2.7b-coco COCO Karpathy test BLEU-4 43.7, CIDEr 145.8
    assert re.fullmatch(r"44\.00 \(ref 43\.70 \[\d\], Δ \+0\.30\)", opt["coco-caption BLEU-4"])
    assert re.fullmatch(r"140\.00 \(ref 145\.80 \[\d\], Δ -5\.80\)", opt["coco-caption CIDEr"])
    # no reference for these models on these tasks
    assert opt["vqav2 accuracy"] == "45.00"
    assert "ref" not in t5["coco-caption CIDEr"]
    # the second protocol is its own row, marked, with the overrides in its protocol column
    assert "prompt_variant=answer" in t5_answer["vqav2 protocol"]
    assert t5_answer["vqav2 accuracy"].startswith("55.00 (ref 63.10") and t5_answer["vqav2 accuracy"].endswith("‡")
    assert t5_answer["coco-caption CIDEr"] == "" and t5_answer["retrieval-coco r_mean"] == ""
    assert t5["vqav2 protocol"] != t5_answer["vqav2 protocol"]
    # non-reportable: dagger and the reason in a footnote
    assert opt["retrieval-coco r_mean"] == "75.00 †"
    assert "† blip2-opt-2.7b-coco · retrieval-coco (run ret-opt): not reportable: --limit 10: a subset" in out
    assert "Table 2" in out and "Table 3" in out
    assert "1 older run(s)" in out
    # the file equals stdout
    assert (results / "LEADERBOARD.md").read_text() == out


def test_cells_show_the_recorded_standard_error(standard):
    """± is one standard error: 13 of 20 questions right (one image each), so sd(0/100 scores) / sqrt(20); the
    caption run's BLEU-4 (a corpus metric without a closed form in the synthetic record) shows no ±."""
    import statistics

    results, _ = standard
    code, out, err = cli(["report", results, "--no-html", "--no-write"])
    assert code == 0, err
    t5 = dict(zip(_md_header(out), _md_rows(out)[0]))
    expected = statistics.stdev([100.0] * 13 + [0.0] * 7) / 20 ** 0.5
    assert t5["vqav2 accuracy"].startswith(f"65.00 ± {expected:.2f} (ref 63.10")
    assert "±" not in t5["coco-caption BLEU-4"]
    cells = json.loads(cli(["report", results, "--json", "--no-html", "--no-write"])[1])["cells"]
    (cell,) = [c for c in cells if c["model"] == "blip2-flan-t5-xl" and c["metric"] == "accuracy" and
               not c["overrides"]]
    assert cell["std_error"] == pytest.approx(expected)


def test_report_of_real_runs_shows_their_recorded_values(real_runs, tmp_path):
    """Over records `evalkit run` wrote this session: one cell per recorded metric, each its run.json value."""
    results = tmp_path / "results"
    shutil.copytree(next(iter(real_runs.values())).parents[2], results)
    records = [json.loads((run_dir / "run.json").read_text()) for run_dir in real_runs.values()]
    recorded = {(r["model"]["name"], r["task"]["name"], name): entry["value"]
                for r in records for name, entry in r["metrics"].items()}
    assert len(records) == 5 and all(r["metrics"] for r in records)
    code, out, err = cli(["report", results, "--json", "--no-html", "--no-write", "--all-metrics"])
    assert code == 0, err
    cells = json.loads(out)["cells"]
    assert {(c["model"], c["task"], c["metric"]): c["value"] for c in cells if c["value"] is not None} == recorded
    assert all(not c["reportable"] and any("--limit" in why for why in c["not_reportable_reasons"]) for c in cells)
    code, out, err = cli(["report", results, "--no-html", "--no-write"])
    assert code == 0, err
    header = _md_header(out)
    rows = {r[0]: dict(zip(header, r)) for r in _md_rows(out)}
    assert sorted(rows) == sorted({r["model"]["name"] for r in records})
    for record in records:
        cell = rows[record["model"]["name"]][f"{record['task']['name']} {record['headline_metric']}"]
        entry = record["metrics"][record["headline_metric"]]
        shown = f"{entry['value']:.2f}" + (f" ± {entry['std_error']:.2f}" if entry["std_error"] is not None else "")
        assert cell == f"{shown} †"


def test_synthetic_runs_break_when_the_real_record_schema_moves(real_runs, tmp_path):
    """make_runs copies the real record; a field renamed in evalkit's run.json stops it with the field's name."""
    import make_runs

    real = real_runs[("shapes-caption", "blip2-tiny-opt")]
    moved = tmp_path / "moved"
    shutil.copytree(real, moved)
    record = json.loads((moved / "run.json").read_text())
    record["journal_header"]["dataset"] = record["journal_header"].pop("data")
    (moved / "run.json").write_text(json.dumps(record))
    refs, good, _ = caption_set(4)
    make_runs.use_real_runs({"caption": moved})
    try:
        with pytest.raises(KeyError, match="journal_header.data"):
            caption_run(tmp_path / "results", "m", good, refs, run_id="x")
    finally:
        make_runs.use_real_runs({"caption": real})
    assert caption_run(tmp_path / "results", "m", good, refs, run_id="x").is_dir()


def test_latest_run_id_and_all_runs(standard):
    results, _ = standard
    _, out, _ = cli(["report", results, "--no-html", "--no-write", "--all-runs"])
    assert [r[0] for r in _md_rows(out)].count("blip2-opt-2.7b-coco") == 2  # the older vqav2 run gets a row
    _, out, _ = cli(["report", results, "--no-html", "--no-write", "--run-id", "vqa-opt-old"])
    rows = {r[0]: dict(zip(_md_header(out), r)) for r in _md_rows(out)}
    assert _no_se(rows["blip2-opt-2.7b-coco"]["vqav2 accuracy"]) == "25.00"
    code, _, err = cli(["report", results, "--no-html", "--no-write", "--run-id", "nope"])
    assert code == 2 and "no run with id 'nope'" in err


def test_csv_is_numeric_and_written(standard):
    results, _ = standard
    code, out, _ = cli(["report", results, "--format", "csv", "--no-html"])
    assert code == 0
    frame = pd.read_csv(io.StringIO(out))
    assert (results / "LEADERBOARD.csv").read_text() == out
    assert list(frame["model"]) == ["blip2-flan-t5-xl", "blip2-flan-t5-xl", "blip2-opt-2.7b-coco"]
    t5 = frame.iloc[0]
    assert t5["vqav2:accuracy"] == pytest.approx(65.0)
    assert t5["vqav2:accuracy:ref"] == pytest.approx(63.1)
    assert t5["vqav2:accuracy:diff"] == pytest.approx(1.9)
    assert t5["vqav2:accuracy:ref_source"] == "paper-table2"
    opt = frame.iloc[2]
    assert opt["coco-caption:CIDEr:diff"] == pytest.approx(-5.8)
    assert opt["retrieval-coco:reportable"] == False  # noqa: E712
    assert frame.iloc[1]["vqav2:overrides"] == "prompt_variant=answer"
    assert frame.iloc[1]["vqav2:protocol"] != t5["vqav2:protocol"]


def test_json_cells(standard):
    results, _ = standard
    code, out, _ = cli(["report", results, "--json", "--no-html", "--no-write"])
    assert code == 0
    data = json.loads(out)
    assert [t["name"] for t in data["tasks"]] == ["coco-caption", "vqav2", "retrieval-coco"]
    cell = next(c for c in data["cells"] if c["model"] == "blip2-flan-t5-xl" and c["task"] == "vqav2"
                and not c["overrides"])
    assert cell["reference"] == 63.1 and cell["difference"] == pytest.approx(1.9)
    assert cell["reference_kind"] == "paper"
    assert [r["value"] for r in cell["other_references"]] == [63.13]  # the LAVIS record
    changed = next(c for c in data["cells"] if c["task"] == "vqav2" and c["overrides"])
    assert changed["protocol_differs_from_default"] and changed["run_id"] == "vqa-t5-answer"
    nr = [c for c in data["cells"] if not c["reportable"]]
    assert {c["run_id"] for c in nr} == {"ret-opt"} and nr[0]["not_reportable_reasons"]


def test_all_metrics_flag(standard):
    results, _ = standard
    _, out, _ = cli(["report", results, "--no-html", "--no-write", "--all-metrics"])
    header = _md_header(out)
    assert "vqav2 accuracy/yes/no" in header and "retrieval-coco txt_r10" in header and "coco-caption ROUGE-L" in header


def test_filters_and_empty_results(standard, tmp_path):
    results, _ = standard
    _, out, _ = cli(["report", results, "--no-html", "--no-write", "--task", "vqav2", "--model", "blip2-flan-t5-xl"])
    assert _md_header(out) == ["model", "vqav2 protocol", "vqav2 accuracy"]
    code, _, err = cli(["report", tmp_path])
    assert code == 2 and "no finished runs" in err
    code, _, err = cli(["report", tmp_path / "missing"])
    assert code == 2 and "does not exist" in err
    code, _, err = cli(["report", results, "--format", "xml"])
    assert code == 2


def test_html_is_self_contained_and_bounded(standard, tmp_path):
    results, _ = standard
    page = tmp_path / "page.html"
    code, _, err = cli(["report", results, "--html", page, "--no-write", "--gallery-size", "4"])
    assert code == 0, err
    text = page.read_text()
    assert '<table id="leaderboard">' in text and "<svg" in text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<link" not in text and "@import" not in text
    assert text.count('<img class="thumb"') > 0 and 'src="data:image/jpeg;base64,' in text
    items = text.count('<div class="item"')
    # 7 runs, each at most 4 worst + 4 disagreeing samples
    assert 0 < items <= 7 * 8
    big = tmp_path / "big.html"
    cli(["report", results, "--html", big, "--no-write", "--gallery-size", "100"])
    assert big.read_text().count('<div class="item"') > items


def test_an_unreadable_run_is_skipped_with_a_warning(tmp_path):
    gold, types, _ = vqa_set(10)
    vqa_run(tmp_path, "blip2-opt-2.7b", answers_with_accuracy(gold, 5), gold, answer_types=types, run_id="ok")
    broken = tmp_path / "blip2-opt-2.7b" / "vqav2" / "broken"
    broken.mkdir(parents=True)
    (broken / "run.json").write_text("{not json")
    in_progress = tmp_path / "blip2-opt-2.7b" / "vqav2" / "running"
    in_progress.mkdir()
    (in_progress / "journal.json").write_text("{}")
    code, out, err = cli(["report", tmp_path, "--no-html", "--no-write"])
    assert code == 0 and "skipped" in err and "broken" in err
    assert "50.00 (ref 53.50" in _no_se(out)  # paper Table 2, blip2-opt-2.7b VQAv2 val


def test_hub_id_model_names_match_references(tmp_path):
    gold, types, _ = vqa_set(10)
    vqa_run(tmp_path, "Salesforce--blip2-opt-6.7b", answers_with_accuracy(gold, 5), gold, run_id="hub",
            source="Salesforce/blip2-opt-6.7b")
    _, out, _ = cli(["report", tmp_path, "--no-html", "--no-write"])
    assert "50.00 (ref 54.30" in _no_se(out)
    # a local checkpoint folder with an unrelated name never matches
    vqa_run(tmp_path, "my-finetune", answers_with_accuracy(gold, 5), gold, run_id="local", source="/ckpt/my-finetune")
    _, out, _ = cli(["report", tmp_path, "--no-html", "--no-write"])
    assert any(r[0] == "my-finetune" and "ref" not in r[2] for r in _md_rows(out))


def test_retrieval_references(tmp_path):
    retrieval_run(tmp_path, "blip2-itm-vit-g-coco", [0] * 9 + [3], [0] * 7 + [2] * 3, task="retrieval-flickr30k",
                  run_id="f30k")
    _, out, _ = cli(["report", tmp_path, "--no-html", "--no-write"])
    row = {k: _no_se(v) for k, v in zip(_md_header(out), _md_rows(out)[0])}
    assert row["retrieval-flickr30k txt_r1"].startswith("90.00 (ref 97.60")
    assert "Δ -7.60" in row["retrieval-flickr30k txt_r1"]
    assert row["retrieval-flickr30k img_r1"].startswith("70.00 (ref 89.70")
    assert row["retrieval-flickr30k r_mean"].startswith("93.33 (ref 97.38")  # derived: mean of Table 5 recalls


# --------------------------------------------------------------------------------------------
# the shipped reference numbers
# --------------------------------------------------------------------------------------------

EXPECTED = [
    ("blip2-opt-2.7b", "vqav2", "val", "accuracy", 53.5, "paper"),
    ("blip2-opt-2.7b", "vqav2", "test-dev", "accuracy", 52.3, "paper"),
    ("blip2-opt-6.7b", "vqav2", "val", "accuracy", 54.3, "paper"),
    ("blip2-opt-6.7b", "vqav2", "test-dev", "accuracy", 52.6, "paper"),
    ("blip2-flan-t5-xl", "vqav2", "val", "accuracy", 63.1, "paper"),
    ("blip2-flan-t5-xl", "vqav2", "test-dev", "accuracy", 63.0, "paper"),
    ("blip2-flan-t5-xxl", "vqav2", "val", "accuracy", 65.2, "paper"),
    ("blip2-flan-t5-xxl", "vqav2", "test-dev", "accuracy", 65.0, "paper"),
    ("blip2-opt-2.7b", "vqav2", "val", "accuracy", 51.88, "lavis"),
    ("blip2-flan-t5-xl", "vqav2", "val", "accuracy", 63.13, "lavis"),
    ("blip2-opt-2.7b-coco", "coco-caption", "test", "BLEU-4", 43.7, "paper"),
    ("blip2-opt-2.7b-coco", "coco-caption", "test", "CIDEr", 145.8, "paper"),
    ("blip2-opt-6.7b-coco", "coco-caption", "test", "BLEU-4", 43.5, "paper"),
    ("blip2-opt-6.7b-coco", "coco-caption", "test", "CIDEr", 145.2, "paper"),
    ("blip2-flan-t5-xl-coco", "coco-caption", "test", "BLEU-4", 42.4, "paper"),
    ("blip2-flan-t5-xl-coco", "coco-caption", "test", "CIDEr", 144.5, "paper"),
    ("blip2-opt-2.7b-coco", "coco-caption", "test", "BLEU-4", 43.8, "lavis"),
    ("blip2-opt-2.7b-coco", "coco-caption", "test", "METEOR", 31.7, "lavis"),
    ("blip2-opt-2.7b-coco", "coco-caption", "test", "ROUGE-L", 62.0, "lavis"),
    ("blip2-opt-2.7b-coco", "coco-caption", "test", "CIDEr", 146.1, "lavis"),
    ("blip2-opt-2.7b-coco", "coco-caption", "test", "SPICE", 25.2, "lavis"),
    ("blip2-opt-2.7b-coco", "nocaps", "val", "CIDEr", 119.7, "paper"),
    ("blip2-opt-2.7b-coco", "nocaps", "val", "SPICE", 15.4, "paper"),
    ("blip2-opt-6.7b-coco", "nocaps", "val", "CIDEr", 121.0, "paper"),
    ("blip2-opt-6.7b-coco", "nocaps", "val", "SPICE", 15.3, "paper"),
    ("blip2-flan-t5-xl-coco", "nocaps", "val", "CIDEr", 121.6, "paper"),
    ("blip2-flan-t5-xl-coco", "nocaps", "val", "SPICE", 15.8, "paper"),
    *[("blip2-itm-vit-g-coco", "retrieval-flickr30k", "test", m, v, "paper") for m, v in
      zip(["txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10"], [97.6, 100.0, 100.0, 89.7, 98.1, 98.9])],
    *[("blip2-itm-vit-g-coco", "retrieval-coco", "test", m, v, "paper") for m, v in
      zip(["txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10"], [85.4, 97.0, 98.5, 68.3, 87.7, 92.6])],
]


def test_reference_file_holds_the_published_numbers():
    from evalkit.analysis.reference_numbers import load_references

    refs = load_references()
    table = {(r.model, r.task, r.split, r.metric, r.kind): r for r in refs if not r.derived}
    for model, task, split, metric, value, kind in EXPECTED:
        assert table[(model, task, split, metric, kind)].value == value, (model, task, metric)
    assert all(r.source_text and r.protocol for r in refs)
    # no duplicate keys, and every metric name is one evalkit writes
    keys = [(r.model, r.task, r.split, r.metric, r.kind) for r in refs]
    assert len(keys) == len(set(keys))
    known = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "SPICE", "accuracy",
             "txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean"}
    assert {r.metric for r in refs} <= known


def test_derived_retrieval_means_match_their_inputs():
    from evalkit.analysis.reference_numbers import load_references

    refs = load_references()
    for task in ("retrieval-coco", "retrieval-flickr30k"):
        values = {r.metric: r.value for r in refs if r.task == task}
        txt = sum(values[f"txt_r{k}"] for k in (1, 5, 10)) / 3
        img = sum(values[f"img_r{k}"] for k in (1, 5, 10)) / 3
        assert values["txt_r_mean"] == pytest.approx(txt)
        assert values["img_r_mean"] == pytest.approx(img)
        assert values["r_mean"] == pytest.approx((txt + img) / 2)


def test_model_name_normalisation():
    from evalkit.analysis.reference_numbers import normalise_model_name, references_for

    assert normalise_model_name("Salesforce/blip2-opt-2.7b") == "blip2-opt-2.7b"
    assert normalise_model_name("Salesforce--blip2-opt-2.7b") == "blip2-opt-2.7b"
    assert [r.value for r in references_for("Salesforce/blip2-opt-2.7b", "vqav2", "val", kind="paper")] == [53.5]
    assert references_for("blip2-opt-2.7b", "vqav2", "train") == []


def test_build_report_raises_for_no_runs(tmp_path):
    from evalkit.analysis.report import build_report

    with pytest.raises(EvalkitError):
        build_report(tmp_path)


def test_a_run_without_metrics_shows_n_a(tmp_path):
    from make_runs import write_run

    gold, types, _ = vqa_set(10)
    vqa_run(tmp_path, "blip2-opt-2.7b", answers_with_accuracy(gold, 5), gold, answer_types=types, run_id="val")
    write_run(tmp_path, "blip2-opt-2.7b", "vqav2", predictions=[{"id": "1", "prediction": "yes"}], sample_scores={},
              metrics={}, run_id="testdev", split="test-dev", data="test-dev")
    code, out, _ = cli(["report", tmp_path, "--no-html", "--no-write"])
    assert code == 0
    rows = [{k: _no_se(v) for k, v in zip(_md_header(out), r)} for r in _md_rows(out)]
    assert [r["vqav2 protocol"].split(" · ")[0] for r in rows] == ["test-dev", "val"]
    assert rows[0]["vqav2 accuracy"] == "n/a" and rows[1]["vqav2 accuracy"].startswith("50.00 (ref 53.50")
    assert "n/a: runs without metrics" in out
    code, _, _ = cli(["report", tmp_path, "--no-write", "--html", tmp_path / "p.html"])
    assert code == 0


def test_gallery_shows_flips_with_the_exact_sign_test(standard, tmp_path):
    """blip2-opt-2.7b-coco answers 9 of the 20 VQA questions right, blip2-flan-t5-xl 13 (the same first ones, one
    image per question): against the OPT run, the T5 run is better on 4 questions and worse on none, so the
    sign test's p is 2 / 2**4 (scipy's binomtest, computed here); each such sample is marked ▲."""
    from scipy.stats import binomtest

    results, _ = standard
    page = tmp_path / "page.html"
    code, _, err = cli(["report", results, "--html", page, "--no-write", "--gallery-size", "30"])
    assert code == 0, err
    text = page.read_text()
    opt_block = text.split('data-run="vqa-opt"')[1].split('<div class="run"')[0]
    (summary,) = [line for line in re.findall(r"<li>(.*?)</li>", opt_block) if "run vqa-t5 vs" in line]
    p = binomtest(4, 4, 0.5).pvalue
    assert "4 samples better, 0 worse" in summary and f"4 better, 0 worse, exact sign test p = {p:.3g}" in summary
    assert opt_block.count('data-flip="better">▲ blip2-flan-t5-xl') == 4 + 2  # vqa-t5: 4; vqa-t5-answer (11): 2
    assert 'data-flip="worse"' not in opt_block
    t5_block = text.split('data-run="vqa-t5"')[1].split('<div class="run"')[0]
    assert 'data-flip="worse">▼ blip2-opt-2.7b-coco' in t5_block
