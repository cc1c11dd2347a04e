"""scripts/test.sh, the README's test command: installs only what is missing (apt-get faked here), and its exit
status is pytest's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "test.sh"
BASH = shutil.which("bash")


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _bin(tmp_path: Path, *, apt: bool = True, tools: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """A PATH folder with only what the script needs: python (this interpreter), dirname, id, env, a logging
    apt-get and sudo (when ``apt``), and stubs of the named ``tools`` (java, chromium, chromedriver)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "apt.log"
    _stub(folder / "python", f'exec "{sys.executable}" "$@"\n')
    for name in ("dirname", "id", "env"):
        (folder / name).symlink_to(shutil.which(name))
    if apt:
        _stub(folder / "apt-get", f'echo "DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> "{log}"\n')
        _stub(folder / "sudo", 'exec "$@"\n')
    for name in tools:
        _stub(folder / name, "exit 0\n")
    return folder, log


def _run(args: list[str], path: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "DEBIAN_FRONTEND"}
    return subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=300,
                          env={**env, "PATH": path})


def test_missing_tools_are_installed_with_apt_get(tmp_path):
    folder, log = _bin(tmp_path)
    proc = _run(["--no-pip", "--version"], str(folder))  # pytest --version: no tests, exit 0
    assert proc.returncode == 0, proc.stderr
    assert "pytest" in proc.stdout + proc.stderr
    assert log.read_text().splitlines() == [
        "DEBIAN_FRONTEND= update -qq",
        "DEBIAN_FRONTEND=noninteractive install -y -qq default-jre-headless chromium chromium-driver"]


def test_apt_get_is_skipped_when_the_tools_exist_or_with_no_apt(tmp_path):
    folder, log = _bin(tmp_path, tools=("java", "chromium", "chromedriver"))
    assert _run(["--no-pip", "--version"], str(folder)).returncode == 0
    assert not log.exists()
    (folder / "java").unlink()
    assert _run(["--no-apt", "--no-pip", "--version"], str(folder)).returncode == 0
    assert not log.exists()


def test_no_apt_get_and_a_missing_tool_is_a_clear_error(tmp_path):
    folder, _ = _bin(tmp_path, apt=False, tools=("chromium", "chromedriver"))
    proc = _run(["--no-pip"], str(folder))
    assert proc.returncode == 2
    assert "default-jre-headless" in proc.stderr and "--no-apt" in proc.stderr


def test_the_exit_status_is_pytests(tmp_path):
    (tmp_path / "test_passes.py").write_text("def test_ok():\n    assert 1 + 1 == 2\n")
    (tmp_path / "test_fails.py").write_text("def test_wrong():\n    assert 1 + 1 == 3\n")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    passed = _run(["--no-apt", "--no-pip", "-p", "no:cacheprovider", str(tmp_path / "test_passes.py")], path)
    assert passed.returncode == 0 and "1 passed" in passed.stdout, passed.stdout + passed.stderr
    failed = _run(["--no-apt", "--no-pip", "-p", "no:cacheprovider", str(tmp_path / "test_fails.py")], path)
    assert failed.returncode == 1 and "1 failed" in failed.stdout, failed.stdout + failed.stderr
