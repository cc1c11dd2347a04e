"""`evalkit list models|tasks`."""

from __future__ import annotations

from typing import List

import typer
from rich.console import Console
from rich.table import Table

out = Console()
list_app = typer.Typer(no_args_is_help=True, help="List registered models or tasks.")


@list_app.command("models")
def list_models() -> None:
    """Registered checkpoints (any hub id or local folder works too)."""
    from evalkit.models.catalog import MODELS

    table = Table()
    for name in ("name", "source", "family", "image size", "what"):
        table.add_column(name)
    for entry in MODELS.values():
        source = f"evalkit:{entry.name} (bundled)" if entry.builtin else entry.source
        table.add_row(entry.name, source, entry.family, str(entry.image_size), entry.description)
    out.print(table)


@list_app.command("tasks")
def list_tasks(include_path: List[str] = typer.Option([], help="folder of extra task files")) -> None:
    """Registered tasks with their kind and default data."""
    from evalkit.core.registry import all_tasks

    table = Table()
    for name in ("task", "kind", "version", "protocols (default first)", "default split", "what"):
        table.add_column(name)
    for spec in all_tasks(include_path).values():
        table.add_row(spec.name, spec.kind.name, spec.version, ", ".join(spec.protocol_names), spec.default_split,
                      spec.description)
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add `list` to the evalkit app."""
    app.add_typer(list_app, name="list")
