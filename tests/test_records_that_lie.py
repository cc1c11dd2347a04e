"""Issue 19 item 7 (probe 3 cases N72, N72b, N73, N74) and issue 21 item 5: compare and report re-compute what
they can from the run folder and refuse a record that disagrees with itself; they say when two runs were made
in different environments. Every case starts from a real `evalkit run` record of this session."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from conftest import evalkit_cli as _evalkit_cli

N_BOOT = "200"


def evalkit_cli(args) -> tuple[int, str, str]:
    """`evalkit ARGS` through the real entry point (evalkit.cli.main.main)."""
    return _evalkit_cli([str(a) for a in args])


def _copy(run_dir: Path, root: Path, name: str) -> Path:
    """A copy of a real run folder at root/name/<model>/<task>/<run id> (a results folder of its own)."""
    target = root / name / run_dir.parent.parent.name / run_dir.parent.name / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def _edit(run_dir: Path, edit) -> None:
    path = run_dir / "run.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record, indent=2))  # json writes NaN as NaN, as a hand edit would


@pytest.fixture
def caption_pair(real_runs, tmp_path):
    real = real_runs[("shapes-caption", "blip2-tiny-opt")]
    return _copy(real, tmp_path, "good"), _copy(real, tmp_path, "edit")


def test_n72_compare_refuses_an_edited_metric(caption_pair):
    good, edited = caption_pair
    _edit(edited, lambda r: r["metrics"]["CIDEr"].update(value=999.99))
    code, out, err = evalkit_cli(["compare", good, edited, "--n-boot", N_BOOT])
    assert code == 2, (out, err)
    (line,) = err.strip().splitlines()
    assert str(edited / "run.json") in line and "metrics.CIDEr.value" in line and "999.99" in line
    assert "+350" not in out  # the edited difference is never shown


def test_n72_an_edited_corpus_bleu_is_caught_by_re_scoring(caption_pair):
    """BLEU is not a mean of per-image scores: compare re-scores it from predictions.jsonl (PTB tokenizer)."""
    good, edited = caption_pair
    recorded = json.loads((good / "run.json").read_text())["metrics"]["BLEU-4"]["value"]
    _edit(edited, lambda r: r["metrics"]["BLEU-4"].update(value=recorded - 5.0))
    code, _, err = evalkit_cli(["compare", good, edited, "--n-boot", N_BOOT])
    assert code == 2 and "metrics.BLEU-4.value" in err and "re-scoring predictions.jsonl" in err
    assert str(edited / "run.json") in err


def test_n72b_report_refuses_an_edited_metric(caption_pair):
    _, edited = caption_pair
    _edit(edited, lambda r: r["metrics"]["CIDEr"].update(value=999.99))
    code, out, err = evalkit_cli(["report", edited.parent.parent.parent, "--no-html", "--no-write"])
    assert code == 2 and "999.99" not in out
    assert "metrics.CIDEr.value" in err and str(edited / "run.json") in err


def test_n73_an_edited_protocol_under_the_old_fingerprint_is_refused(caption_pair):
    good, edited = caption_pair
    assert json.loads((good / "run.json").read_text())["protocol"]["num_beams"] != 1
    _edit(edited, lambda r: r["protocol"].update(num_beams=1))
    code, _, err = evalkit_cli(["compare", good, edited, "--n-boot", N_BOOT])
    assert code == 2 and "field protocol does not match protocol_fingerprint" in err
    code, _, err = evalkit_cli(["report", edited.parent.parent.parent, "--no-html", "--no-write"])
    assert code == 2 and "protocol_fingerprint" in err and str(edited / "run.json") in err


def test_n73_a_re_fingerprinted_protocol_still_disagrees_with_the_journal_header(caption_pair):
    from evalkit.core.protocol import sha256_of

    _, edited = caption_pair

    def edit(record):
        record["protocol"]["num_beams"] = 1
        record["protocol_fingerprint"] = sha256_of(record["protocol"])

    _edit(edited, edit)
    code, _, err = evalkit_cli(["report", edited.parent.parent.parent, "--no-html", "--no-write"])
    assert code == 2 and "journal_header.protocol_fingerprint" in err


@pytest.mark.parametrize("value,shown", [(math.nan, "NaN"), (None, "null"), (math.inf, "inf")])
def test_n74_a_nan_or_null_metric_is_named_not_shown(caption_pair, value, shown):
    _, edited = caption_pair
    _edit(edited, lambda r: r["metrics"]["BLEU-4"].update(value=value))
    code, out, err = evalkit_cli(["report", edited.parent.parent.parent, "--no-html", "--no-write"])
    assert code == 2, out
    (line,) = err.strip().splitlines()
    assert f"field metrics.BLEU-4.value is {shown.lower()} (a metric must be" in line
    assert str(edited / "run.json") in line
    assert "| nan |" not in out


def test_unedited_copies_still_compare_and_report(caption_pair):
    good, copy = caption_pair
    code, out, err = evalkit_cli(["compare", good, copy, "--n-boot", N_BOOT])
    assert code == 0, (out, err)
    code, out, err = evalkit_cli(["report", copy.parent.parent.parent, "--no-html", "--no-write"])
    assert code == 0, err


@pytest.fixture
def vqa_pair(real_runs, tmp_path):
    real = real_runs[("shapes-vqa", "blip2-tiny-opt")]
    return _copy(real, tmp_path, "a"), _copy(real, tmp_path, "b")


def test_environment_difference_is_a_warning_and_strict_env_exits_2(vqa_pair, tmp_path):
    base, cand = vqa_pair
    real_version = json.loads((base / "run.json").read_text())["provenance"]["packages"]["transformers"]

    def other_env(record):
        record["provenance"]["packages"]["transformers"] = "4.57.3"
        record["provenance"]["packages"]["pillow"] = "12.3.0"
        record["journal_header"]["dtype"] = "bfloat16"

    _edit(cand, other_env)
    code, out, err = evalkit_cli(["compare", base, cand, "--n-boot", N_BOOT])
    assert code == 0, (out, err)
    warning = next(line for line in err.splitlines() if line.startswith("warning:"))
    assert f"transformers {real_version} vs 4.57.3" in warning and "dtype float32 vs bfloat16" in warning
    real_pillow = json.loads((base / "run.json").read_text())["provenance"]["packages"]["pillow"]
    assert f"Pillow {real_pillow} vs 12.3.0" in warning
    assert "**warning**" in out and "4.57.3" in out
    code, out, err = evalkit_cli(["compare", base, cand, "--n-boot", N_BOOT, "--strict-env"])
    assert code == 2 and "provenance.packages.transformers differs" in err and "journal_header.dtype" in err
    same = _copy(base, tmp_path, "c")
    code, _, err = evalkit_cli(["compare", base, same, "--n-boot", N_BOOT, "--strict-env"])
    assert code == 0 and "warning" not in err


def test_report_footnotes_an_environment_difference(real_runs, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(real_runs[("shapes-vqa", "blip2-tiny-opt")],
                    results / "blip2-tiny-opt" / "shapes-vqa" / "r1")
    other = results / "blip2-tiny-t5" / "shapes-vqa" / "r2"
    shutil.copytree(real_runs[("shapes-vqa", "blip2-tiny-opt")], other)

    def other_model(record):
        record["model"]["name"] = "blip2-tiny-t5"
        record["provenance"]["packages"]["torch"] = "2.4.0"

    _edit(other, other_model)
    code, out, err = evalkit_cli(["report", results, "--no-html", "--no-write"])
    assert code == 0, err
    (note,) = [line for line in out.splitlines() if line.startswith("- §")]
    assert "shapes-vqa: runs differ in torch" in note and "2.4.0 (blip2-tiny-t5 run " in note
    # without the difference there is no such footnote
    _edit(other, lambda r: r["provenance"]["packages"].update(
        torch=json.loads((results / "blip2-tiny-opt/shapes-vqa/r1/run.json").read_text())["provenance"]["packages"]["torch"]))
    code, out, _ = evalkit_cli(["report", results, "--no-html", "--no-write"])
    assert code == 0 and "- §" not in out
