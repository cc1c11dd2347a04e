"""`evalkit list models|tasks` and the demo table never cut a name: tab-separated in a pipe, and in an 80-column
terminal every name whole (the descriptions wrap or are left out)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from conftest import run_cli
from evalkit.core.registry import all_tasks
from evalkit.models.catalog import MODELS


def terminal_output(monkeypatch, args: list[str], width: int) -> str:
    """What `evalkit ARGS` prints on a terminal ``width`` columns wide."""
    import evalkit.cli.list_commands as list_commands
    from evalkit.cli.main import main

    buffer = io.StringIO()
    monkeypatch.setattr(list_commands, "out", Console(file=buffer, force_terminal=True, width=width,
                                                      color_system=None))
    monkeypatch.setattr("sys.argv", ["evalkit", *args])
    try:
        main()
    except SystemExit as exit_:
        assert not exit_.code
    return buffer.getvalue()


@pytest.mark.parametrize("what, names", [("models", lambda: list(MODELS)),
                                         ("tasks", lambda: list(all_tasks([])))])
@pytest.mark.parametrize("width", [80, 60])
def test_every_name_is_whole_in_a_narrow_terminal(monkeypatch, what, names, width):
    text = terminal_output(monkeypatch, ["list", what], width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines)
    first_words = [line.split()[0] for line in lines if line.strip() and not set(line.strip()) <= set("─ ")]
    for name in names():
        assert name in first_words, f"{name} is not whole at the start of a row:\n{text}"
    assert "…" not in text


def test_models_source_column_is_whole_too(monkeypatch):
    text = terminal_output(monkeypatch, ["list", "models"], 80)
    for entry in MODELS.values():
        if not entry.builtin:
            assert entry.source in text


def test_a_pipe_gets_tab_separated_lines(capsys):
    code, out, _ = run_cli(["list", "models"], capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("\t") == ["name", "source", "family", "image size", "what"]
    rows = [line.split("\t") for line in lines[1:]]
    assert [row[0] for row in rows] == list(MODELS) and all(len(row) == 5 for row in rows)
    assert {row[0]: row[4] for row in rows} == {e.name: e.description for e in MODELS.values()}
    code, out, _ = run_cli(["list", "tasks"], capsys)
    assert [line.split("\t")[0] for line in out.splitlines()[1:]] == list(all_tasks([]))


def test_demo_table_headers_and_models_are_whole():
    from evalkit.cli.demo_command import TABLE_TITLE, demo_table
    from evalkit.cli.name_table import print_name_table

    records = [{"task": {"name": task}, "model": {"name": model},
                "metrics": {m: {"value": 12.5} for m in ("BLEU-4", "CIDEr", "accuracy", "txt_r1", "img_r1")}}
               for task in ("shapes-caption", "shapes-vqa", "shapes-chat", "shapes-retrieval")
               for model in ("blip2-tiny-opt", "blip2-tiny-t5")]
    headers, rows = demo_table(records)
    buffer = io.StringIO()
    print_name_table(Console(file=buffer, force_terminal=True, width=80, color_system=None), headers, rows,
                     title=TABLE_TITLE, numeric=tuple(range(1, len(headers))))
    text = buffer.getvalue()
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())
    words = text.split()
    for header in headers:
        assert all(word in words for word in header.split()), f"{header!r} cut:\n{text}"
    assert "blip2-tiny-opt" in words and "blip2-tiny-t5" in words
    piped = io.StringIO()
    print_name_table(Console(file=piped, force_terminal=False), headers, rows)
    assert piped.getvalue().splitlines()[0].split("\t") == headers
