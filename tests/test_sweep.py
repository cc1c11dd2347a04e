"""`evalkit run TASK,TASK --model M,M`: the matrix of runs, each cell the run `evalkit run TASK --model M` does."""

from __future__ import annotations

import json

from conftest import run_cli


def test_sweep_runs_every_cell_in_its_own_resumable_run(tmp_path, capsys, java):
    results = str(tmp_path / "results")
    code, out, err = run_cli(["run", "shapes-vqa,shapes-caption", "--model", "blip2-tiny-opt,blip2-tiny-t5",
                              "--limit", "12", "-q", "--results", results], capsys)
    assert code == 0, err or out
    assert "Traceback" not in out + err
    assert "4 of 4 cells succeeded" in out and "failed cells" not in out
    # not a terminal: tab-separated, names and headers whole (a pasteable table)
    header = next(line for line in out.splitlines() if line.startswith("model\t")).split("\t")
    assert header == ["model", "shapes-vqa accuracy", "shapes-caption BLEU-4", "shapes-caption CIDEr"]
    for model in ("blip2-tiny-opt", "blip2-tiny-t5"):
        assert any(line.startswith(f"{model}\t") and len(line.split("\t")) == 4 for line in out.splitlines())
        for task in ("shapes-vqa", "shapes-caption"):
            assert len(list((tmp_path / "results" / model / task).glob("*/run.json"))) == 1
    for header in ("accuracy", "BLEU-4", "CIDEr"):
        assert header in out

    # the single run of a cell lands in the same folder: complete, so its recorded result (nothing run again)
    (run_json,) = (tmp_path / "results" / "blip2-tiny-t5" / "shapes-vqa").glob("*/run.json")
    recorded = json.loads(run_json.read_text())
    code, out, err = run_cli(["run", "shapes-vqa", "--model", "blip2-tiny-t5", "--limit", "12", "-q",
                              "--results", results, "--json"], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record == recorded and "already complete" in err
    # --rescore scores that folder's journal again: every prediction resumed, none generated
    code, out, err = run_cli(["run", "shapes-vqa", "--model", "blip2-tiny-t5", "--limit", "12", "-q",
                              "--results", results, "--json", "--rescore"], capsys)
    rescored = json.loads(out)
    assert code == 0 and rescored["counts"]["resumed_from_journal"] == 12 and rescored["run_id"] == record["run_id"]


def test_a_failed_cell_does_not_stop_the_others(tmp_path, capsys):
    args = ["run", "shapes-retrieval", "--model", "blip2-tiny-opt,blip2-tiny-t5,blip2-tiny-itm", "--limit", "8",
            "-q", "--results", str(tmp_path)]
    code, out, err = run_cli(args, capsys)
    assert code == 2
    assert "Traceback" not in out + err and "internal error" not in out + err
    assert "1 of 3 cells succeeded" in out
    assert "[3/3] shapes-retrieval · blip2-tiny-itm: ok" in err  # progress goes to stderr
    failed = out[out.index("failed cells (2):"):]
    assert "shapes-retrieval · blip2-tiny-opt: task shapes-retrieval (retrieval) cannot run blip2-tiny-opt" in failed
    assert "shapes-retrieval · blip2-tiny-t5: task shapes-retrieval (retrieval) cannot run blip2-tiny-t5" in failed
    assert "blip2-tiny-itm" not in failed
    row = next(line for line in out.splitlines() if line.startswith("blip2-tiny-itm\t"))
    assert "failed" not in row and "100.0" in row
    assert not (tmp_path / "blip2-tiny-opt").exists()

    code, out, err = run_cli([*args, "--json"], capsys)
    assert code == 2
    cells = {cell["model"]: cell for cell in json.loads(out)}
    assert [cells[m]["status"] for m in ("blip2-tiny-opt", "blip2-tiny-t5", "blip2-tiny-itm")] == \
        ["failed", "failed", "ok"]
    assert cells["blip2-tiny-opt"]["exit_code"] == 2
    (run_json,) = (tmp_path / "blip2-tiny-itm" / "shapes-retrieval").glob("*/run.json")
    assert cells["blip2-tiny-itm"]["run_dir"] == str(run_json.parent)  # the same run again, not a new one


def test_every_name_is_checked_before_any_cell_runs(tmp_path, capsys):
    for args, message in [
        (["shapes-vqa,shapes-caption,shapes-vqq", "--model", "blip2-tiny-opt"], "unknown task 'shapes-vqq'"),
        (["shapes-vqa,shapes-caption", "--model", "blip2-tiny-opt,blip2-tiny-otp"], "unknown model 'blip2-tiny-otp'"),
        (["shapes-vqa,,shapes-caption", "--model", "blip2-tiny-opt"], "has an empty name"),
        (["shapes-vqa", "--model", "blip2-tiny-opt,"], "has an empty name"),
        (["shapes-vqa,shapes-caption", "--model", "blip2-tiny-opt", "--limit", "0"], "--limit must be at least 1"),
    ]:
        code, out, err = run_cli(["run", *args, "--results", str(tmp_path / "results"), "-q"], capsys)
        assert code == 2, args
        assert message in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not (tmp_path / "results").exists(), args  # nothing ran


def test_a_single_task_and_model_is_unchanged(tmp_path, capsys):
    code, out, err = run_cli(["run", "shapes-retrieval", "--model", "blip2-tiny-opt", "--results", str(tmp_path)],
                             capsys)
    assert code == 2 and out == ""
    assert err.strip() == "error: task shapes-retrieval (retrieval) cannot run blip2-tiny-opt (a generation model)"
