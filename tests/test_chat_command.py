"""`evalkit chat`: typed in a real pseudo-terminal, and scripted turns equal to a `shapes-chat` run."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from evalkit.demo.bundled import SHAPES_DIR

SHAPE = SHAPES_DIR / "images" / "shapes_test_000001.png"
QUESTIONS = ["how many shapes are there?", "what color is the square?", "is there a blue square?",
             "what shape is on the right?"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_script_gives_the_answers_of_a_shapes_chat_run(tmp_path, capsys):
    code, _, err = run_cli(["run", "shapes-chat", "--limit", "8", "--results", str(tmp_path / "results"), "-q"],
                           capsys)
    assert code == 0, err
    (run_dir,) = [p.parent for p in (tmp_path / "results").glob("*/shapes-chat/*/run.json")]
    record = json.loads((run_dir / "run.json").read_text())
    questions = {q["question_id"]: q["question"] for q in json.loads(
        (SHAPES_DIR / "v2_OpenEnded_shapes_test_questions.json").read_text())["questions"]}
    first_image = [p for p in read_jsonl(run_dir / "predictions.jsonl") if p["image"].endswith(SHAPE.name)]
    first_image.sort(key=lambda p: p["extra"]["turn"])
    assert len(first_image) == 4
    script = tmp_path / "turns.txt"
    script.write_text("\n".join(questions[int(p["id"])] for p in first_image) + "\n/quit\nnever asked\n")
    code, out, err = run_cli(["chat", str(SHAPE), "-m", "blip2-tiny-opt", "--script", str(script), "--jsonl",
                              str(tmp_path / "chat.jsonl")], capsys)
    assert code == 0, err
    turns = read_jsonl(tmp_path / "chat.jsonl")
    assert [t["answer"] for t in turns] == [p["prediction"] for p in first_image]
    assert [t["prompt"] for t in turns] == [p["prompt"] for p in first_image]
    assert [t["kept_turns"] for t in turns] == [p["extra"]["history_turns"] for p in first_image]
    assert {t["protocol_fingerprint"] for t in turns} == {record["protocol_fingerprint"]}
    assert turns[-1]["dropped_turns"] > 0  # the tiny OPT's 64 positions: the oldest turns had to go
    assert "the context is full" in out and "never asked" not in out


def _read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 120.0) -> str:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {marker!r} within {timeout:g} s; the terminal shows:\n{seen.decode(errors='replace')}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                pytest.fail(f"the terminal closed before {marker!r}:\n{seen.decode(errors='replace')}")
            seen += chunk
    text, _, rest = bytes(seen).partition(marker)
    seen[:] = rest
    return (text + marker).decode(errors="replace").replace("\r", "")


def test_typed_in_a_pseudo_terminal():
    import evalkit

    expected = evalkit.load("blip2-tiny-opt").chat(str(SHAPE))
    answers = [expected.ask(q).answer for q in QUESTIONS[:3]]
    expected.reset()
    after_reset = expected.ask(QUESTIONS[3]).answer

    master, slave = os.openpty()
    env = {**os.environ, "TERM": "dumb", "COLUMNS": "120"}
    process = subprocess.Popen([sys.executable, "-m", "evalkit", "chat", str(SHAPE), "-m", "blip2-tiny-opt"],
                               stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
                               start_new_session=True)
    os.close(slave)
    seen = bytearray()
    try:
        header = _read_until(master, b"you> ", seen)
        assert "chat with blip2-tiny-opt" in header and "/reset" in header
        shown = []
        for question in QUESTIONS[:3]:
            os.write(master, question.encode() + b"\n")
            shown.append(_read_until(master, b"you> ", seen))
        assert [f"model> {a}" in s for s, a in zip(shown, answers)] == [True] * 3, shown
        assert "the context is full" in shown[2]  # 64 positions: the third prompt drops the oldest turn
        os.write(master, b"/reset\n")
        assert "(conversation reset)" in _read_until(master, b"you> ", seen)
        os.write(master, QUESTIONS[3].encode() + b"\n")
        assert f"model> {after_reset}" in _read_until(master, b"you> ", seen)
        os.write(master, b"/quit\n")
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
