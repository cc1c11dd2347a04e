"""The README's first steps say what a newcomer meets: the CPU-only install from PyTorch's CPU wheel index, right
under the first command block, with each install's size; and the demo time `evalkit demo --help` gives is the
README's."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks_and_text() -> tuple[list[str], str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S), text


def test_the_cpu_only_install_is_right_under_the_first_block_with_both_sizes():
    blocks, text = _blocks_and_text()
    cpu_install = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert cpu_install in blocks[0] or cpu_install in blocks[1]
    first_end = text.index(blocks[0]) + len(blocks[0])
    assert text.index(cpu_install) - first_end < 600  # right under the first block, before anything else
    install = blocks[1] if cpu_install in blocks[1] else blocks[0]
    assert re.search(r"the venv: \d+(\.\d+)? GB; with the CUDA build 6\.1 GB", install)


def test_demo_help_gives_the_readme_time(capsys):
    blocks, _ = _blocks_and_text()
    readme_time = re.search(r"evalkit demo\s+# main job, offline, CPU, ~(\d+) s", blocks[0]).group(1)
    code, out, _ = run_cli(["demo", "--help"], capsys)
    assert code == 0
    said = re.search(r"offline, CPU, about (\d+) s", " ".join(re.sub(r"[│╭╮╰╯─]", " ", out).split()))
    assert said and said.group(1) == readme_time
