"""`evalkit list models|tasks`."""

from __future__ import annotations

from typing import List

import typer
from rich.console import Console

from evalkit.cli.name_table import print_name_table

out = Console()
list_app = typer.Typer(no_args_is_help=True, help="List registered models or tasks.")


@list_app.command("models")
def list_models() -> None:
    """Registered checkpoints (any hub id or local folder works too)."""
    from evalkit.models.catalog import MODELS

    rows = [[entry.name, f"evalkit:{entry.name} (bundled)" if entry.builtin else entry.source, entry.family,
             str(entry.image_size), entry.description] for entry in MODELS.values()]
    print_name_table(out, ["name", "source", "family", "image size", "what"], rows, wrap=(4,), numeric=(3,))


@list_app.command("tasks")
def list_tasks(include_path: List[str] = typer.Option([], help="folder of extra task files")) -> None:
    """Registered tasks with their kind and default data."""
    from evalkit.core.registry import all_tasks

    rows = [[spec.name, spec.kind.name, spec.version, ", ".join(spec.protocol_names), spec.default_split,
             spec.description] for spec in all_tasks(include_path).values()]
    print_name_table(out, ["task", "kind", "version", "protocols (default first)", "default split", "what"], rows,
                     wrap=(3, 5))


def register(app: typer.Typer) -> None:
    """Add `list` to the evalkit app."""
    app.add_typer(list_app, name="list")
