#!/usr/bin/env python
"""Measure which transformers releases evalkit works with: install each into a throwaway venv, run the golden
check (evalkit.doctor.golden: the bundled tiny models' answers on a slice of the shapes split), and write
docs/COMPATIBILITY.md.

    python scripts/compat_sweep.py                      # newest patch of every minor from 4.40 to the newest
    python scripts/compat_sweep.py --versions 4.47.1,5.0.0
    python scripts/compat_sweep.py --ci                 # CI: the golden check on the oldest, a middle, the newest
                                                        #     supported version (exit 1 when one differs)

Each venv lives in .compat-venvs/transformers-X (git-ignored, reused on the next run). It sees the active
environment's packages (torch and evalkit's other dependencies, through a .pth that adds its site-packages
after the venv's own), and pip installs into it only what `transformers==X` plus evalkit's requirements need
changed (an older tokenizers or huggingface_hub, say), so a version costs one resolve, not a torch install.
Run it from an activated venv that has evalkit's dependencies (`pip install -e .`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / ".compat-venvs"
RESULTS = VENVS / "results.json"
DOC = ROOT / "docs" / "COMPATIBILITY.md"
OLDEST_MINOR = (4, 40)  # "every minor from 4.4x"
CI_VERSIONS = ("4.46.3", "4.57.6", "5.24.0")  # oldest supported, the 4 -> 5 boundary, newest (measured table)
GOLDEN_TIMEOUT_S = 900


def released_versions() -> list[str]:
    """transformers releases on the package index, newest first (`pip index versions`)."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "transformers"], capture_output=True,
                         text=True, check=True).stdout
    listed = re.search(r"Available versions: (.*)", out)
    if not listed:
        raise SystemExit(f"compat_sweep: cannot read `pip index versions transformers`:\n{out}")
    return [v.strip() for v in listed.group(1).split(",") if re.fullmatch(r"\d+\.\d+\.\d+", v.strip())]


def newest_patch_per_minor(versions: list[str], oldest: tuple[int, int] = OLDEST_MINOR) -> list[str]:
    """The newest patch of each minor from ``oldest`` on, oldest first."""
    best: dict[tuple[int, int], tuple[int, int, int]] = {}
    for text in versions:
        parts = tuple(int(p) for p in text.split("."))
        if parts[:2] >= oldest:
            best[parts[:2]] = max(best.get(parts[:2], parts), parts)
    return [".".join(map(str, best[minor])) for minor in sorted(best)]


def boundaries_first(versions: list[str]) -> list[str]:
    """The newest, the oldest, the 4 -> 5 boundary, then halving the gaps: a sweep cut short still brackets the
    range."""
    order, spans = [], [(0, len(versions) - 1)]
    fours = [v for v in versions if v.startswith("4.")]
    for v in (versions[-1], versions[0], fours[-1] if fours else None,
              next((v for v in versions if v.startswith("5.")), None)):
        if v and v not in order:
            order.append(v)
    while spans:
        low, high = spans.pop(0)
        if high - low < 2:
            continue
        middle = (low + high) // 2
        if versions[middle] not in order:
            order.append(versions[middle])
        spans += [(low, middle), (middle, high)]
    return order + [v for v in versions if v not in order]


def make_venv(version: str) -> Path:
    """A venv for one transformers version, seeing the active environment's packages after its own."""
    venv = VENVS / f"transformers-{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        base = sysconfig.get_paths()["purelib"]
        Path(site, "zz_base_environment.pth").write_text(f"import site; site.addsitedir({base!r})\n")
    return python


def install(python: Path, version: str) -> tuple[bool, str]:
    """pip-install transformers==version with evalkit's requirements into the venv; (ok, first error line)."""
    done = python.parent.parent / ".installed"
    if done.exists():
        return True, ""
    command = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", f"transformers=={version}",
               *other_requirements()]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        return False, first_error(result.stderr + result.stdout)
    done.write_text(version)
    return True, ""


def other_requirements() -> list[str]:
    """evalkit's requirements from pyproject.toml except transformers (evalkit itself is imported from the
    checkout, PYTHONPATH, so no editable build per venv)."""
    import tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return [d for d in dependencies if not re.match(r"transformers\b", d)]


def first_error(text: str) -> str:
    """The line that says what went wrong (the last 'Error' line of a traceback or pip's ERROR line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("WARNING")]
    for line in reversed(lines):
        if re.match(r"^(ERROR|[A-Za-z_.]*(Error|Exception)\b|error:|internal error)", line):
            return line[:300]
    return (lines[-1] if lines else "no output")[:300]


def golden_check(python: Path) -> dict:
    """Run the golden check in the venv: {'status': identical|different|error, ...}."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env.pop("VIRTUAL_ENV", None)
    started = time.monotonic()
    try:
        result = subprocess.run([str(python), "-m", "evalkit.doctor.golden"], capture_output=True, text=True,
                                cwd=ROOT, env=env, timeout=GOLDEN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"golden check ran past {GOLDEN_TIMEOUT_S} s"}
    seconds = round(time.monotonic() - started, 1)
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    try:
        report = json.loads(last)
    except ValueError:
        return {"status": "error", "error": first_error(result.stderr + result.stdout), "seconds": seconds}
    return {"status": "identical" if report["identical"] else "different", "seconds": seconds,
            "first_difference": report["first_difference"], "differences": report["differences"],
            "versions": report["versions"]}


def installed(python: Path, names=("tokenizers", "huggingface_hub", "accelerate")) -> dict[str, str]:
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in %r}))" % (names,))
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return json.loads(result.stdout) if result.returncode == 0 else {}


def sweep_one(version: str) -> dict:
    print(f"compat_sweep: transformers {version} ...", file=sys.stderr, flush=True)
    python = make_venv(version)
    ok, error = install(python, version)
    if not ok:
        return {"version": version, "status": "install failed", "error": error}
    row = {"version": version, **golden_check(python), "installed": installed(python)}
    print(f"compat_sweep: transformers {version}: {row['status']} {row.get('error') or ''}", file=sys.stderr,
          flush=True)
    return row


def load_results() -> dict[str, dict]:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


BEGIN, END = "<!-- compat_sweep table: begin -->", "<!-- compat_sweep table: end -->"


def write_doc(results: dict[str, dict], torch_version: str, python_version: str) -> None:
    """The measured table, newest first, between the markers of docs/COMPATIBILITY.md (the prose around it is
    kept; a missing file gets the table alone)."""
    rows = [results[v] for v in sorted(results, key=version_key, reverse=True)]
    lines = [
        BEGIN,
        f"Measured with torch {torch_version} (CPU), Python {python_version}; newest first.",
        "",
        "| transformers | works | golden | tokenizers | huggingface_hub | check s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        installed_with = row.get("installed") or {}
        works = "yes" if row["status"] in ("identical", "different") else f"no: `{row.get('error', row['status'])}`"
        golden = {"identical": "identical", "different": f"different: {row.get('first_difference')}"}.get(
            row["status"], "—")
        lines.append(f"| {row['version']} | {works} | {golden} | {installed_with.get('tokenizers', '')} | "
                     f"{installed_with.get('huggingface_hub', '')} | {row.get('seconds', '')} |")
    lines.append(END)
    table = "\n".join(lines)
    text = DOC.read_text() if DOC.exists() else ""
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + table + text[text.index(END) + len(END):]
    else:
        text = (text + "\n\n" if text else "") + table + "\n"
    DOC.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", help="comma-separated releases (default: newest patch of each minor)")
    parser.add_argument("--ci", action="store_true", help=f"check only {', '.join(CI_VERSIONS)}; no doc written")
    parser.add_argument("--fresh", action="store_true", help="forget earlier results (venvs are still reused)")
    args = parser.parse_args()
    VENVS.mkdir(exist_ok=True)
    if args.ci:
        rows = [sweep_one(v) for v in CI_VERSIONS]
        bad = [r for r in rows if r["status"] != "identical"]
        for row in rows:
            print(f"transformers {row['version']}: {row['status']} "
                  f"{row.get('first_difference') or row.get('error') or ''}".rstrip())
        return 1 if bad else 0
    versions = args.versions.split(",") if args.versions else boundaries_first(
        newest_patch_per_minor(released_versions()))
    results = {} if args.fresh else load_results()
    import platform

    import torch

    for version in versions:
        results[version] = sweep_one(version)
        RESULTS.write_text(json.dumps(results, indent=1))
        write_doc(results, torch.__version__, platform.python_version())
    return 0


if __name__ == "__main__":
    sys.exit(main())
