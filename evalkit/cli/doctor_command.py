"""`evalkit doctor`: is this installation fit for a long run? Environment, golden answers, known-bad transformers,
cached datasets and checkpoints; exit 0 when all is well, 1 with one line per problem.

torch and transformers are imported only inside the command (the CLI stays light, issue 23).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def doctor(
    model: List[str] = typer.Option([], "--model", help="also check this checkpoint is in the hub cache (repeatable)"),
    golden: bool = typer.Option(True, "--golden/--no-golden",
                                help="run the golden check (7 short runs of the bundled tiny models, on CPU)"),
    golden_file: Optional[Path] = typer.Option(None, "--golden-file", hidden=True,
                                               help="golden answers to check against (default: the shipped file)"),
) -> None:
    """Check the installation: environment, golden answers on CPU, known-bad transformers, hub cache."""
    from rich.console import Console
    from rich.markup import escape

    from evalkit.doctor.checkup import run_checkup

    console = Console(highlight=False, soft_wrap=True)
    checkup = run_checkup(model, golden_file, golden)
    for title, lines in checkup.sections:
        console.print(f"[bold]{escape(title)}[/bold]")
        for line in lines:
            console.print(escape(line))
    if checkup.problems:
        console.print(f"[red]{len(checkup.problems)} problem{'s' if len(checkup.problems) > 1 else ''}:[/red]")
        for problem in checkup.problems:
            console.print(f"problem: {escape(problem)}")
        raise typer.Exit(1)
    console.print("[green]all well[/green]")


def register(app: typer.Typer) -> None:
    """Add `doctor` to the evalkit app."""
    app.command()(doctor)
