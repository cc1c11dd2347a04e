"""Mistyped commands and options, as a new user types them: the usage message, the closest name, exit 2."""

from __future__ import annotations

import re

import pytest

from conftest import run_cli


@pytest.mark.parametrize("args, hint", [
    (["captoin", "x.png"], "No such command 'captoin' (did you mean: caption"),
    (["chta"], "No such command 'chta' (did you mean: chat"),
    (["score", "vqa2"], "No such command 'vqa2' (did you mean: vqav2?)"),
    (["list", "modles"], "No such command 'modles' (did you mean: models?)"),
    (["run", "shapes-vqa", "--modle", "x"], "No such option: --modle (did you mean: --model?)"),
    (["caption", "x.png", "--promt", "a photo of"], "No such option: --promt (did you mean: --prompt"),
    (["ask", "x.png", "what?", "--qestions", "q.jsonl"], "No such option: --qestions (did you mean: --questions?)"),
    (["chat", "x.png", "--scirpt", "t.txt"], "No such option: --scirpt (did you mean: --script"),
    (["score", "vqav2", "--annotation", "a.json"], "No such option: --annotation (did you mean: --annotations?)"),
    (["report", "--fromat", "csv"], "No such option: --fromat (did you mean: --format"),
])
def test_usage_message_with_the_closest_name_and_exit_2(args, hint, capsys):
    code, out, err = run_cli(args, capsys)
    assert code == 2, (out, err)
    assert err.startswith("Usage: evalkit") and hint in err
    assert "internal error" not in err and "Traceback" not in err


def test_unknown_option_without_a_close_name_still_gets_usage(capsys):
    code, _, err = run_cli(["run", "shapes-vqa", "--xyzzy"], capsys)
    assert code == 2 and "No such option: --xyzzy" in err and "Usage: evalkit run" in err


def test_a_mistyped_option_gets_only_the_closest_name(capsys):
    """`--limt` is one letter from --limit; --split and --wait are further: only --limit is suggested."""
    code, _, err = run_cli(["run", "shapes-vqa", "--limt", "3"], capsys)
    assert code == 2 and "No such option: --limt (did you mean: --limit?)" in err
    assert "--split" not in err and "--wait" not in err


@pytest.mark.parametrize("command", [["run", "--help"], ["demo", "--help"], ["report", "--help"]])
def test_plain_flags_carry_no_type_label_and_options_keep_theirs(command, capsys, monkeypatch):
    """typer labels a flag `<bool>` as if it took a value (issue 23); a flag takes none."""
    monkeypatch.setenv("COLUMNS", "160")
    code, out, _ = run_cli(command, capsys)
    assert code == 0
    assert "<bool>" not in out
    flag_lines = [line for line in out.splitlines() if "--quiet" in line or "--json" in line or "--chat" in line]
    assert flag_lines and not any("<" in line.split("│")[1] for line in flag_lines if "│" in line)
    if command[0] == "run":
        assert re.search(r"--limit\s+<int>", out)  # an option that takes a value keeps its label
