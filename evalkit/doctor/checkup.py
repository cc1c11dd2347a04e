"""`evalkit doctor`'s checks, as sections of lines and a list of problems (one line each; none means all is well).

Problems: the golden answers differ (or the golden runs fail); the installed transformers is a known BLIP-2
breakage or outside the range evalkit declares (measured in docs/COMPATIBILITY.md); no Java for the caption
metrics; a task's pinned dataset cached incompletely (or not at all while HF_HUB_OFFLINE asks for the cache
only); a ``--model`` that is not in the cache, or cached incompletely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Checkup:
    """What doctor prints: titled sections of lines, then the problems."""

    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def run_checkup(models: list[str], golden_file: Path | None = None, golden: bool = True) -> Checkup:
    """Every check, in the order doctor prints them."""
    from evalkit.doctor.environment import environment, environment_lines

    checkup = Checkup()
    env = environment()
    checkup.sections.append(("environment", environment_lines(env)))
    if not env["java"]:
        checkup.problems.append(f"java: {env['java_origin']}")
    _versions(checkup, env["transformers"])
    if golden:
        _golden(checkup, golden_file)
    cache = Path(env["hub_cache"])
    _datasets(checkup, cache, env["hub_offline"])
    if models:
        _models(checkup, cache, models)
    return checkup


def _versions(checkup: Checkup, installed: str | None) -> None:
    from evalkit.models.known_breakages import KNOWN_BREAKAGES, breakages_for, declared_range, in_declared_range

    declared = declared_range()
    lines = [f"  evalkit declares transformers{declared or ' (no range found)'}; measured: docs/COMPATIBILITY.md"]
    lines += [f"  {b.versions}: {b.what} [{b.evidence}]" for b in KNOWN_BREAKAGES]
    checkup.sections.append(("transformers versions known to break BLIP-2", lines))
    if installed is None:
        checkup.problems.append("transformers is not installed")
        return
    for breakage in breakages_for(installed):
        checkup.problems.append(f"transformers {installed} is known to break BLIP-2: {breakage.what} "
                                f"[{breakage.evidence}]")
    if not in_declared_range(installed, declared):
        checkup.problems.append(f"transformers {installed} is outside the range evalkit supports "
                                f"(transformers{declared}, docs/COMPATIBILITY.md)")


def _golden(checkup: Checkup, golden_file: Path | None) -> None:
    import time

    from evalkit.core.errors import EvalkitError
    from evalkit.doctor.golden import GOLDEN_FILE, check_golden

    path = golden_file or GOLDEN_FILE
    started = time.monotonic()
    try:
        result = check_golden(path)
    except EvalkitError as err:
        checkup.sections.append(("golden check", [f"  could not run: {err}"]))
        checkup.problems.append(f"golden check could not run: {err}")
        return
    except Exception as err:  # noqa: BLE001 - a library that cannot run the bundled models is the finding itself
        checkup.sections.append(("golden check", [f"  failed: {type(err).__name__}: {err}"]))
        checkup.problems.append(f"golden check failed: {type(err).__name__}: {err}")
        return
    seconds = time.monotonic() - started
    made = ", ".join(f"{k} {v}" for k, v in result.made_with.items())
    runs = sum(1 for _ in result.differences)
    samples = sum(result.differences.values())
    lines = [f"  {path} (made with {made})",
             f"  {'identical' if result.identical else 'DIFFERENT'}: {runs} runs on CPU in {seconds:.0f} s"
             + ("" if result.identical else f", {samples} samples differ; first: {result.first_difference}")]
    checkup.sections.append(("golden check", lines))
    if not result.identical:
        checkup.problems.append(f"golden answers differ: {result.first_difference}")


def _datasets(checkup: Checkup, cache: Path, offline: bool) -> None:
    from evalkit.core.registry import all_tasks
    from evalkit.data.hub_datasets import parse_hub_source
    from evalkit.doctor.hub_cache import dataset_status

    lines = []
    for spec in all_tasks().values():
        if not (spec.default_data or "").startswith("hf:"):
            continue
        source = parse_hub_source(spec.default_data[3:])
        globs = [glob for name, glob in source.files if name.split(".")[0] == spec.default_split]
        status = dataset_status(cache, source.repo_id, source.revision, globs)
        where = f"{source.repo_id}@{source.revision[:12]} ({spec.default_split})"
        lines.append(f"  {spec.name}: {where}: {status.state}" + ("" if status.state == "complete"
                                                                    else f" ({status.detail})"))
        if status.state == "incomplete" or (status.state == "missing" and offline):
            checkup.problems.append(f"task {spec.name}: dataset {where} {status.state} in the hub cache "
                                    f"({status.detail})")
    checkup.sections.append(("pinned datasets in the hub cache", lines or ["  no task reads a pinned hub dataset"]))


def _models(checkup: Checkup, cache: Path, models: list[str]) -> None:
    from evalkit.core.errors import EvalkitError
    from evalkit.doctor.hub_cache import model_status
    from evalkit.models.catalog import resolve_model

    lines = []
    for name in models:
        try:
            entry = resolve_model(name)
        except EvalkitError as err:
            lines.append(f"  {name}: {err}")
            checkup.problems.append(f"model {name}: {err}")
            continue
        folder = Path(entry.source)
        if folder.is_dir():
            weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin"))
            state = "complete" if (folder / "config.json").is_file() and weights else "incomplete"
            lines.append(f"  {name}: local folder {folder}: {state}")
            if state != "complete":
                checkup.problems.append(f"model {name}: {folder} lacks config.json or weights")
            continue
        status = model_status(cache, entry.source)
        lines.append(f"  {name}: {entry.source}: {status.state}" + ("" if status.state == "complete"
                                                                      else f" ({status.detail})"))
        if status.state != "complete":
            checkup.problems.append(f"model {name}: {entry.source} {status.state} in the hub cache ({status.detail})")
    checkup.sections.append(("checkpoints in the hub cache", lines))
