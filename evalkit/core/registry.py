"""Finds task specs: the task files in evalkit's tasks/ folder, installed plugins, and --include-path."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path

from evalkit.core.errors import EvalkitError, closest_names
from evalkit.core.task_spec import TaskSpec

ENTRY_POINT_GROUP = "evalkit.tasks"


def _tasks_of_module(module) -> list[TaskSpec]:
    tasks = getattr(module, "TASKS", None)
    if tasks is None:
        return []
    return list(tasks() if callable(tasks) else tasks)


def _builtin_tasks() -> list[TaskSpec]:
    import evalkit.tasks as package

    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        found += _tasks_of_module(importlib.import_module(f"evalkit.tasks.{info.name}"))
    return found


def _plugin_tasks() -> list[TaskSpec]:
    found = []
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        found += list(loaded()) if callable(loaded) else _tasks_of_module(loaded)
    return found


def _path_tasks(include_paths: list[str]) -> list[TaskSpec]:
    found = []
    for folder in include_paths:
        directory = Path(folder)
        if not directory.is_dir():
            raise EvalkitError(f"--include-path {folder} is not a folder")
        for file in sorted(directory.glob("*.py")):
            name = f"evalkit_user_tasks_{file.stem}"
            spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:  # noqa: BLE001 - a broken user task file is a user error
                raise EvalkitError(f"task file {file} failed to load: {type(err).__name__}: {err}") from None
            found += _tasks_of_module(module)
    return found


def all_tasks(include_paths: list[str] | None = None) -> dict[str, TaskSpec]:
    """Every known task by name; later sources may not silently replace earlier ones."""
    tasks: dict[str, TaskSpec] = {}
    for task in _builtin_tasks() + _plugin_tasks() + _path_tasks(include_paths or []):
        if task.name in tasks and tasks[task.name] is not task:
            raise EvalkitError(f"two task files define a task named {task.name!r}")
        tasks[task.name] = task
    return tasks


def get_task(name: str, include_paths: list[str] | None = None) -> TaskSpec:
    """The task called ``name``; a one-line error with the closest names otherwise."""
    tasks = all_tasks(include_paths)
    if name not in tasks:
        raise EvalkitError(f"unknown task {name!r}{closest_names(name, list(tasks))}; see `evalkit list tasks`")
    return tasks[name]
