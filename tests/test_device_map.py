"""--device-map auto (accelerate) loads the model through accelerate's placement and gives the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli


def _run(results: Path, capsys, *extra: str) -> tuple[dict, bytes]:
    code, out, err = run_cli(["run", "shapes-vqa", "-m", "blip2-tiny-t5", "--limit", "30", "-q", "--results",
                              str(results), "--json", *extra], capsys)
    assert code == 0, err
    record = json.loads(out)
    run_dir = results / "blip2-tiny-t5" / "shapes-vqa" / record["run_id"]
    return record, (run_dir / "predictions.jsonl").read_bytes()


def test_device_map_auto_gives_the_predictions_of_a_plain_load(tmp_path, capsys):
    plain, plain_lines = _run(tmp_path / "plain", capsys)
    mapped, mapped_lines = _run(tmp_path / "mapped", capsys, "--device-map", "auto")
    assert mapped_lines == plain_lines and mapped["metrics"] == plain["metrics"]
    assert plain["runtime"]["device_map"] is None
    assert mapped["runtime"]["device_map"]["requested"] == "auto"
    assert set(mapped["runtime"]["device_map"]["placement"].values()) == {"cpu"}
