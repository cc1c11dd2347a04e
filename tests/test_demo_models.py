"""Known answers from the trained demo models: the harness must clear floors a broken harness cannot,
a deliberately broken setting must lower the score, and compare must see a degraded model."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from evalkit.demo.bundled import DEMO_DIR, MODELS_DIR, SHAPES_DIR

MODELS_MD = DEMO_DIR / "MODELS.md"
README = Path(__file__).resolve().parents[1] / "README.md"

# Floors agreed from measurements (evalkit/demo/MODELS.md): the shipped weights and two retrains with
# other seeds score at least CIDEr 636, VQA 97.7, R@1 98.0; the floors leave more than twice the
# seed-to-seed spread as margin.
FLOORS = {
    ("shapes-caption", "blip2-tiny-opt", "CIDEr"): 550.0,
    ("shapes-caption", "blip2-tiny-t5", "CIDEr"): 550.0,
    ("shapes-vqa", "blip2-tiny-opt", "accuracy"): 90.0,
    ("shapes-vqa", "blip2-tiny-t5", "accuracy"): 90.0,
    ("shapes-retrieval", "blip2-tiny-itm", "txt_r1"): 90.0,
    ("shapes-retrieval", "blip2-tiny-itm", "img_r1"): 90.0,
}
FAST_VQA = ["--limit", "120", "-q"]


@pytest.fixture(scope="module")
def demo_results(tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("demo") / "results"
    from evalkit.cli.demo_command import run_demo

    run_demo(results, batch_size=None, device="cpu", show_progress=False, chat=True)
    return results


def _record(results: Path, model: str, task: str) -> dict:
    (run_json,) = (results / model / task).glob("*/run.json")
    return json.loads(run_json.read_text())


@pytest.mark.parametrize("task, model, metric", list(FLOORS))
def test_trained_models_clear_their_floors(demo_results, task, model, metric):
    record = _record(demo_results, model, task)
    assert record["reportable"], record["not_reportable_reasons"]
    assert record["metrics"][metric]["value"] >= FLOORS[(task, model, metric)]


@pytest.mark.parametrize("model", ["blip2-tiny-opt", "blip2-tiny-t5"])
def test_chat_runs_record_the_single_turn_score(demo_results, model):
    record = _record(demo_results, model, "shapes-chat")
    single = _record(demo_results, model, "shapes-vqa")
    this, other = record["metrics"]["accuracy"]["value"], single["metrics"]["accuracy"]["value"]
    assert record["comparison"] == {"task": "shapes-vqa", "run_id": single["run_id"], "metric": "accuracy",
                                    "other": other, "this": this, "difference": round(this - other, 4)}
    assert this != other  # the models never saw multi-turn prompts (MODELS.md), so the scores differ


# --------------------------------------------------------------------------------------------
# the numbers the docs quote, against a fresh demo run
# --------------------------------------------------------------------------------------------

MODEL_OF = {"opt": "blip2-tiny-opt", "t5": "blip2-tiny-t5", "itm": "blip2-tiny-itm"}
METRIC_OF = {"BLEU-4": "BLEU-4", "CIDEr": "CIDEr", "accuracy": "accuracy", "VQA accuracy": "accuracy",
             "TR@1": "txt_r1", "IR@1": "img_r1"}
TASK_OF_METRIC = {"BLEU-4": "shapes-caption", "CIDEr": "shapes-caption", "VQA accuracy": "shapes-vqa",
                  "TR@1": "shapes-retrieval", "IR@1": "shapes-retrieval"}
# every (task, model, metric) the demo reports a headline for; the docs must quote each one
QUOTED = {(task, model, metric) for model in ("blip2-tiny-opt", "blip2-tiny-t5")
          for task, metric in [("shapes-caption", "BLEU-4"), ("shapes-caption", "CIDEr"), ("shapes-vqa", "accuracy"),
                               ("shapes-chat", "accuracy")]} | {("shapes-retrieval", "blip2-tiny-itm", "txt_r1"),
                                                                ("shapes-retrieval", "blip2-tiny-itm", "img_r1")}
NUMBER = r"\d+(?:\.\d+)?"


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end]


def _table_rows(section: str) -> list[list[str]]:
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    return rows


def models_md_scores() -> dict[tuple[str, str, str], str]:
    """(task, model, metric) -> the number as printed in MODELS.md's measured table."""
    section = _section(MODELS_MD.read_text(), "## Scores through evalkit")
    header, *rows = _table_rows(section)
    quoted = {}
    for row in rows:
        model = row[0]
        for column, cell in zip(header[1:], row[1:]):
            if not cell:
                continue
            task, names = column.split(" ", 1)
            values = re.findall(NUMBER + r"(?= / |$| \()", cell)
            metrics = names.split(" / ")
            assert len(values) == len(metrics), (column, cell)
            for name, value in zip(metrics, values):
                quoted[(task, model, METRIC_OF[name])] = value
    return quoted


def models_md_shipped_column() -> tuple[dict[tuple[str, str, str], str], dict[tuple[str, str], float]]:
    """The seed table: (task, model, metric) -> the shipped (seed 0) number; (task, metric) -> its tolerance."""
    section = _section(MODELS_MD.read_text(), "## Retraining tolerance")
    header, *rows = _table_rows(section)
    assert header[1].startswith("shipped") and header[-1].startswith("tolerance"), header
    quoted, tolerance = {}, {}
    for row in rows:
        family, names = row[0].split(" · ")
        metrics = names.split(" / ")
        values = re.findall(NUMBER, row[1])
        assert len(values) == len(metrics), row
        tolerances = {}
        for part in row[-1].split(","):  # "±30 CIDEr, ±2 BLEU-4" or "±2.5"
            tol, _, name = part.strip().lstrip("±").partition(" ")
            tolerances[name or None] = float(tol)
        for name, value in zip(metrics, values):
            task = TASK_OF_METRIC[name]
            quoted[(task, MODEL_OF[family], METRIC_OF[name])] = value
            tolerance[(task, METRIC_OF[name])] = tolerances.get(name, tolerances.get(None))
    return quoted, tolerance


def readme_scores() -> dict[tuple[str, str, str], str]:
    """The demo sentence in README.md: `OPT/T5 CIDEr a/b, ..., chat accuracy a/b; ITM TR@1/IR@1 a/b`."""
    text = README.read_text()
    start = text.index("`evalkit demo` runs the bundled")
    paragraph = text[start:text.index("\n\n", start)].replace("\n", " ")
    quoted = {}
    pairs = {"CIDEr": ("shapes-caption", "CIDEr"), "BLEU-4": ("shapes-caption", "BLEU-4"),
             "VQA accuracy": ("shapes-vqa", "accuracy"), "chat accuracy": ("shapes-chat", "accuracy")}
    for label, (task, metric) in pairs.items():
        (found,) = re.findall(rf"(?<![\w-]){re.escape(label)} ({NUMBER})/({NUMBER})", paragraph)
        quoted[(task, "blip2-tiny-opt", metric)], quoted[(task, "blip2-tiny-t5", metric)] = found
    (found,) = re.findall(rf"TR@1/IR@1 ({NUMBER})/({NUMBER})", paragraph)
    quoted[("shapes-retrieval", "blip2-tiny-itm", "txt_r1")] = found[0]
    quoted[("shapes-retrieval", "blip2-tiny-itm", "img_r1")] = found[1]
    return quoted


def measured_build() -> tuple[str, str, int]:
    """(torch, transformers, threads) the MODELS.md table was measured with."""
    (found,) = re.findall(r"Measured with torch (\S+), transformers (\S+), (\d+) threads", MODELS_MD.read_text())
    return found[0], found[1].rstrip(","), int(found[2])


def _tolerance(task: str, metric: str) -> float:
    """0 (exact to the printed digits) on the documented build; the retraining tolerance otherwise."""
    import transformers

    torch_version, transformers_version, threads = measured_build()
    if (torch.__version__, transformers.__version__, torch.get_num_threads()) == (torch_version, transformers_version,
                                                                                   threads):
        return 0.0
    _, tolerance = models_md_shipped_column()
    return tolerance[("shapes-vqa" if task == "shapes-chat" else task, metric)]


def _check_quoted(demo_results: Path, quoted: dict[tuple[str, str, str], str], where: str) -> None:
    assert set(quoted) == QUOTED, f"{where} quotes {sorted(quoted)}"
    wrong = []
    for (task, model, metric), printed in sorted(quoted.items()):
        value = _record(demo_results, model, task)["metrics"][metric]["value"]
        digits = len(printed.partition(".")[2])
        tolerance = _tolerance(task, metric)
        ok = f"{value:.{digits}f}" == printed if tolerance == 0 else abs(value - float(printed)) <= tolerance
        if not ok:
            wrong.append(f"{model} {task} {metric}: {where} says {printed}, the demo gives {value:.{max(digits, 2)}f}"
                         + (f" (tolerance {tolerance})" if tolerance else ""))
    assert not wrong, "\n".join(wrong)


def test_models_md_scores_are_what_the_demo_gives(demo_results):
    _check_quoted(demo_results, models_md_scores(), "MODELS.md")


def test_models_md_seed_table_shipped_column_is_what_the_demo_gives(demo_results):
    shipped, tolerance = models_md_shipped_column()
    assert all(t > 0 for t in tolerance.values()) and len(tolerance) == 5
    chat = {key: value for key, value in models_md_scores().items() if key[0] == "shapes-chat"}
    _check_quoted(demo_results, {**shipped, **chat}, "MODELS.md (seed table)")


def test_readme_scores_are_what_the_demo_gives(demo_results):
    _check_quoted(demo_results, readme_scores(), "README.md")


def test_the_documented_build_is_what_the_numbers_were_measured_with():
    """The shipped models' own training log names the torch build the docs claim."""
    torch_version, transformers_version, threads = measured_build()
    for model in MODEL_OF.values():
        log = json.loads((MODELS_DIR / model / "demo_scores.json").read_text())
        assert (log["torch"], log["transformers"], log["threads"]) == (torch_version, transformers_version, threads), \
            model


def test_shipped_weights_match_the_sha256_in_models_md():
    rows = re.findall(r"^\| `(blip2-[\w-]+)` \| `([0-9a-f]{64})` \|$", MODELS_MD.read_text(), flags=re.M)
    documented = dict(rows)
    assert len(rows) == len(documented) == 3
    shipped = sorted(p.name for p in MODELS_DIR.iterdir() if (p / "model.safetensors").is_file())
    assert sorted(documented) == shipped
    for model, digest in documented.items():
        assert hashlib.sha256((MODELS_DIR / model / "model.safetensors").read_bytes()).hexdigest() == digest, model


def test_demo_records_name_the_documented_weights(demo_results):
    """Each demo run.json's weights hash is evalkit's hash (sha256 of "file:sha256" lines) of the documented file."""
    documented = dict(re.findall(r"^\| `(blip2-[\w-]+)` \| `([0-9a-f]{64})` \|$", MODELS_MD.read_text(), flags=re.M))
    records = [json.loads(p.read_text()) for p in demo_results.glob("*/*/*/run.json")]
    assert len(records) == 7
    for record in records:
        digest = documented[record["model"]["name"]]
        assert record["model"]["weights_sha256"] == hashlib.sha256(f"model.safetensors:{digest}".encode()).hexdigest()


def test_report_over_the_demo_runs(demo_results, capsys):
    code, out, err = run_cli(["report", str(demo_results)], capsys)
    assert code == 0, err
    assert "blip2-tiny-opt" in out and "blip2-tiny-t5" in out and "blip2-tiny-itm" in out
    assert (demo_results / "LEADERBOARD.md").exists() and (demo_results / "LEADERBOARD.csv").exists()
    html = (demo_results / "report.html").read_text()
    assert "data:image/" in html and "blip2-tiny-t5" in html


def _vqa_accuracy(generator, samples, annotations, batch_size=8):
    from evalkit.data.images import ImageSource
    from evalkit.metrics.vqa_accuracy import score_vqa
    from evalkit.core.registry import get_task

    protocol = get_task("shapes-vqa").protocol_for("opt")
    images = ImageSource()
    answers = {}
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        queries = generator.encode_images(generator.pixel_values([images.open(s.image) for s in batch]))
        prompts = [protocol.prompt.replace("{question}", s.question) for s in batch]
        for sample, answer in zip(batch, generator.generate(queries, prompts, protocol)):
            answers[int(sample.id)] = answer
    return score_vqa([annotations[int(s.id)] for s in samples], answers).overall


def test_right_padding_for_opt_lowers_the_score():
    from evalkit.data.data_arg import parse_data_arg
    from evalkit.data.vqa_datasets import load_vqa_set
    from evalkit.models.catalog import resolve_model
    from evalkit.models.blip2_generation import Blip2Generator
    from evalkit.models.loading import load_checkpoint
    from evalkit.core.registry import get_task

    task = get_task("shapes-vqa")
    sample_set = load_vqa_set(parse_data_arg(str(SHAPES_DIR)), "test", None, task.columns)
    samples = sample_set.samples[:96]
    assert len({len(s.question) for s in samples[:8]}) > 1  # mixed prompt lengths in a batch
    generator = Blip2Generator(load_checkpoint(resolve_model("blip2-tiny-opt"), "cpu"))
    right = _vqa_accuracy(generator, samples, sample_set.annotations)
    assert generator.tokenizer.padding_side == "left"
    generator.tokenizer.padding_side = "right"
    wrong = _vqa_accuracy(generator, samples, sample_set.annotations)
    assert wrong < right - 10


def test_a_wrong_prompt_lowers_the_score(demo_results, tmp_path, capsys):
    code, _, err = run_cli(["run", "shapes-vqa", "-m", "blip2-tiny-opt", "--prompt", "{question}",
                            "--results", str(tmp_path), "--batch-size", "16", "-q"], capsys)
    assert code == 0, err
    wrong = _record(tmp_path, "blip2-tiny-opt", "shapes-vqa")["metrics"]["accuracy"]["value"]
    right = _record(demo_results, "blip2-tiny-opt", "shapes-vqa")["metrics"]["accuracy"]["value"]
    assert wrong < right - 10


@pytest.fixture(scope="module")
def degraded_opt(tmp_path_factory) -> Path:
    from safetensors.torch import load_file, save_file

    target = tmp_path_factory.mktemp("degraded") / "blip2-tiny-opt-degraded"
    shutil.copytree(MODELS_DIR / "blip2-tiny-opt", target)
    weights = load_file(target / "model.safetensors")
    generator = torch.Generator().manual_seed(0)
    noisy = {name: (t + 0.5 * t.float().std() * torch.randn(t.shape, generator=generator)).to(t.dtype)
             if name.startswith("language_model") and t.is_floating_point() and t.numel() > 1 else t
             for name, t in weights.items()}
    save_file(noisy, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_compare_flags_a_degraded_model_and_passes_an_identical_rerun(degraded_opt, tmp_path, capsys):
    base = ["run", "shapes-vqa", "--results", str(tmp_path), "--batch-size", "16", *FAST_VQA]
    assert run_cli(base + ["-m", "blip2-tiny-opt"], capsys)[0] == 0
    assert run_cli(base + ["-m", "blip2-tiny-opt", "--run-id", "again"], capsys)[0] == 0
    assert run_cli(base + ["-m", str(degraded_opt)], capsys)[0] == 0
    runs = sorted((tmp_path / "blip2-tiny-opt" / "shapes-vqa").iterdir())
    first = next(r for r in runs if r.name != "again")
    degraded = next((tmp_path / "blip2-tiny-opt-degraded" / "shapes-vqa").iterdir())
    code, out, _ = run_cli(["compare", str(first), str(degraded)], capsys)
    assert code == 1 and "regression" in out
    code, out, _ = run_cli(["compare", str(first), str(tmp_path / "blip2-tiny-opt" / "shapes-vqa" / "again")], capsys)
    assert code == 0
    assert run_cli(base[:-3] + ["-m", "blip2-tiny-opt", "--limit", "60", "-q"], capsys)[0] == 0
    other = next(r for r in (tmp_path / "blip2-tiny-opt" / "shapes-vqa").iterdir() if r not in runs)
    code, _, err = run_cli(["compare", str(first), str(other)], capsys)
    assert code == 2 and ("data" in err or "sample_ids" in err)
