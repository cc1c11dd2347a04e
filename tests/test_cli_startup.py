"""The CLI starts without torch or transformers: help (of every command), listings, usage errors and `score`
import neither (they cost ~1.1 s of import time). Each case runs `main()` in a fresh interpreter and reports
which heavy modules ended up in sys.modules."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
VQA = FIXTURES / "vqav2_53q"
HEAVY = ("torch", "transformers")

# runs main() with each argv in turn (all in one interpreter), then lists every registered command and its
# subcommands so that each one's --help is run too: a command added later is covered without editing this test
PROBE = r"""
import contextlib, io, json, sys
import typer
from evalkit.cli import main as cli

def run(argv):
    sys.argv = ["evalkit", *argv]
    code = 0
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main()
        except SystemExit as exit:
            code = exit.code
    return code

def command_paths(command, prefix=()):
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, prefix + (name,))
    return paths

results = []
for argv in json.loads(sys.argv[1]):
    results.append({"argv": argv, "code": run(argv), "heavy": [m for m in HEAVY if m in sys.modules]})
for path in command_paths(typer.main.get_command(cli.app)):
    argv = [*path, "--help"]
    results.append({"argv": argv, "code": run(argv), "heavy": [m for m in HEAVY if m in sys.modules]})
print(json.dumps(results))
""".replace("HEAVY", repr(HEAVY))


def probe(*argvs: list[str]) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(list(argvs))], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_help_listing_usage_errors_and_score_import_no_torch(tmp_path):
    missing = str(tmp_path / "missing.json")
    results = probe(
        ["--help"],
        ["list", "tasks"],
        ["list", "models"],
        ["run", "shapes-vqa", "--limt", "3"],  # a usage error
        ["nosuchcommand"],
        ["score", "vqav2", "--questions", str(VQA / "v2_OpenEnded_mscoco_val2014_questions_53.json"),
         "--annotations", str(VQA / "v2_mscoco_val2014_annotations_53.json"),
         "--predictions", str(VQA / "emma_vqa_val2014_53q_pred_first_annotator.json"), "--json"],
        ["score", "coco-caption", "--annotations", missing, "--predictions", missing],  # imports its scorer, then exit 2
    )
    by_argv = {" ".join(r["argv"]): r for r in results}
    assert by_argv["--help"]["code"] == 0
    assert by_argv["run shapes-vqa --limt 3"]["code"] == 2
    assert by_argv["score vqav2 --questions " + str(VQA / "v2_OpenEnded_mscoco_val2014_questions_53.json")
                   + " --annotations " + str(VQA / "v2_mscoco_val2014_annotations_53.json") + " --predictions "
                   + str(VQA / "emma_vqa_val2014_53q_pred_first_annotator.json") + " --json"]["code"] == 0
    assert by_argv[f"score coco-caption --annotations {missing} --predictions {missing}"]["code"] == 2
    helps = [r for r in results if r["argv"][-1:] == ["--help"]]
    assert {"run --help", "demo --help", "list tasks --help", "score coco-caption --help"} <= \
        {" ".join(r["argv"]) for r in helps}
    heavy = [(" ".join(r["argv"]), r["heavy"]) for r in results if r["heavy"]]
    assert not heavy, f"the first of these imported torch/transformers: {heavy}"


def test_the_probe_sees_a_torch_import():
    """The check itself can fail: a path that does import torch (checking --kv-cache against the generator's
    choices) is reported."""
    results = probe(["run", "shapes-vqa", "--kv-cache", "bogus"])
    assert results[0]["code"] == 2 and "torch" in results[0]["heavy"]
