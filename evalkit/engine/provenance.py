"""Where a number came from: versions, git commit, machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

import evalkit

PACKAGES = ("torch", "transformers", "tokenizers", "datasets", "pycocoevalcap", "accelerate", "numpy", "pandas",
            "pillow", "safetensors")


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can move a number."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def evalkit_git_commit() -> str:
    """The git commit of the evalkit checkout ('+dirty' if it has changes), or 'unknown'."""
    root = Path(evalkit.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_description(device: torch.device) -> str:
    """'NVIDIA H100 80GB HBM3' or 'cpu (x86_64, 2 threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.machine()}, {torch.get_num_threads()} threads)"


def provenance() -> dict:
    """Versions and environment for a run record."""
    return {
        "evalkit_version": evalkit.__version__,
        "git_commit": evalkit_git_commit(),
        "python": sys.version.split()[0],
        "working_directory": os.getcwd(),  # what relative image paths in predictions.jsonl are relative to
        "platform": platform.platform(),
        "packages": package_versions(),
    }
