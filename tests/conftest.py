"""Shared fixtures: tiny BLIP-2 checkpoints built here, caption sets in each supported format."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)

FIXTURES = Path(__file__).parent / "fixtures"
COCO_FIXTURE = FIXTURES / "coco_val2017"


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
