"""Shared fixtures: tiny BLIP-2 checkpoints built here, caption sets in each supported format."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)
# evalkit's own cache (the hub blobs it verified, evalkit.data.hub_snapshot): one per test session, not the user's
os.environ["EVALKIT_CACHE"] = tempfile.mkdtemp(prefix="evalkit-test-cache-")

FIXTURES = Path(__file__).parent / "fixtures"
COCO_FIXTURE = FIXTURES / "coco_val2017"
JAVA_MISSING = ("the test suite needs a Java runtime for the COCO caption metrics (PTB tokenizer, METEOR) and none "
                "is on PATH: run scripts/test.sh, which installs it, or `apt-get install default-jre-headless`")


def java_on_path() -> str:
    """The real ``java`` on PATH; a test failure naming the fix when there is none."""
    found = shutil.which("java")
    if found is None:
        pytest.fail(JAVA_MISSING, pytrace=False)
    return found


@pytest.fixture(scope="session")
def java() -> str:
    """Java is a hard requirement of the suite, like Chromium: its absence fails the tests that need it
    (never a skip)."""
    return java_on_path()


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_blip2

    return build_tiny_blip2(tmp_path_factory.mktemp("models") / "tiny-opt", "opt")


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    from tiny_models import build_tiny_blip2

    return build_tiny_blip2(tmp_path_factory.mktemp("models") / "tiny-t5", "t5")


def coco_annotations() -> dict:
    return json.loads((COCO_FIXTURE / "captions_val2017_sample8.json").read_text())


def write_karpathy(directory: Path, repeat: int = 1) -> Path:
    """A dataset_coco.json (Karpathy format) over the fixture images, in directory/val2017."""
    content = coco_annotations()
    shutil.copytree(COCO_FIXTURE / "val2017", directory / "val2017", dirs_exist_ok=True)
    refs: dict[int, list[str]] = {}
    for ann in content["annotations"]:
        refs.setdefault(ann["image_id"], []).append(ann["caption"])
    images = []
    for copy in range(repeat):
        for n, image in enumerate(content["images"]):
            cocoid = image["id"] + copy * 10_000_000
            images.append({"filepath": "val2017", "filename": image["file_name"], "imgid": len(images),
                           "split": "test" if n < 6 or copy else "val", "cocoid": cocoid,
                           "sentences": [{"raw": r, "tokens": r.lower().split()} for r in refs[image["id"]]]})
    path = directory / "dataset_coco.json"
    path.write_text(json.dumps({"dataset": "coco", "images": images}))
    return path


@pytest.fixture
def karpathy_dir(tmp_path) -> Path:
    write_karpathy(tmp_path)
    return tmp_path


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `evalkit ARGS` in-process; returns (exit code, stdout, stderr)."""
    from evalkit.cli.main import main

    old = sys.argv
    sys.argv = ["evalkit", *args]
    code = 0
    try:
        main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------------
# real run records, written once per test session by `evalkit run` on the bundled tiny models
# --------------------------------------------------------------------------------------------

REAL_RUNS = [  # (task, bundled model, extra arguments)
    ("shapes-caption", "blip2-tiny-opt", ["--limit", "8"]),
    ("shapes-vqa", "blip2-tiny-opt", ["--limit", "12"]),
    ("shapes-chat", "blip2-tiny-opt", ["--limit", "12"]),  # chat: where the two models' answers differ
    ("shapes-chat", "blip2-tiny-t5", ["--limit", "12"]),
    ("shapes-retrieval", "blip2-tiny-itm", ["--limit", "8", "--scores"]),
]


def evalkit_cli(args: list[str]) -> tuple[int, str, str]:
    """`evalkit ARGS` in-process without capsys (for session fixtures): (exit code, stdout, stderr)."""
    from evalkit.cli.main import main

    old, out, err = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = ["evalkit", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory, java) -> dict[tuple[str, str], Path]:
    """(task, model) -> run folder of REAL_RUNS, written by `evalkit run` once per session (pytest-xdist
    workers share one copy). tests/make_runs.py derives its synthetic records from these, so a change of
    evalkit's record schema breaks them instead of going unnoticed."""
    from filelock import FileLock

    import make_runs

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    results = shared / "real-runs"
    with FileLock(str(shared / "real-runs.lock")):
        if not (results / "COMPLETE").is_file():
            shutil.rmtree(results, ignore_errors=True)
            for task, model, extra in REAL_RUNS:
                code, out, err = evalkit_cli(["run", task, "-m", model, "--results", str(results), "-q", *extra])
                assert code == 0, f"evalkit run {task} -m {model} failed: {err or out}"
            (results / "COMPLETE").write_text("")
    runs = {}
    for task, model, _ in REAL_RUNS:
        (run_json,) = (results / model / task).glob("*/run.json")
        runs[(task, model)] = run_json.parent
    make_runs.use_real_runs({"caption": runs[("shapes-caption", "blip2-tiny-opt")],
                             "vqa": runs[("shapes-vqa", "blip2-tiny-opt")],
                             "retrieval": runs[("shapes-retrieval", "blip2-tiny-itm")]})
    return runs
