"""The `evalkit` command: one thin subcommand per stage over the library functions."""

from __future__ import annotations

import difflib
import os
import re
import sys

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from evalkit.core.errors import EvalkitError, closest_names

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Paper-grade, batched, resumable evaluation of BLIP-2 vision-language models.")
err_console = Console(stderr=True)

# typer labels a plain flag `<bool>` in help, as if it took a value; a flag takes none, so it gets no type label
# (typer has no setting for this; hand-written because the label comes from this one method)
_type_label = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = lambda option, ctx: None if option.is_flag else _type_label(option, ctx)


def main() -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        code = app(standalone_mode=False)  # typer.Exit(code) comes back as a return value in this mode
        if isinstance(code, int) and code:
            sys.exit(code)
    except EvalkitError as err:
        err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted; run the same command again to resume where it stopped")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as err:  # noqa: BLE001
        # typer may bundle its own copy of click, so its usage errors are recognised by shape, not class
        if callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int):
            _add_closest_name(err)
            err.show()
            sys.exit(err.exit_code)
        if type(err).__name__ == "Abort":
            sys.exit(1)
        if os.environ.get("EVALKIT_DEBUG"):
            raise
        # escaped: a message may hold rich markup look-alikes ('[/…]' in every gloo error, a folder named 'ro[/x]')
        err_console.print(f"[red]internal error:[/red] {escape(f'{type(err).__name__}: {err}')} "
                          "(set EVALKIT_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)


def _add_closest_name(err: Exception) -> None:
    """Give a usage error for an unknown command or option the closest names, as evalkit's own errors do."""
    message = getattr(err, "message", None)
    if not isinstance(message, str):
        return
    if getattr(err, "possibilities", None) and getattr(err, "option_name", None):  # click found close options
        closest = difflib.get_close_matches(err.option_name, list(err.possibilities), n=1, cutoff=0.0)
        err.message = f"{message} (did you mean: {closest[0]}?)"  # the closest only, not click's every near miss
        err.possibilities = None
        return
    unknown = re.match(r"No such command '(.+?)'\.", message)
    group = getattr(getattr(err, "ctx", None), "command", None)
    if unknown and callable(getattr(group, "list_commands", None)):
        name = unknown.group(1)
        names = [c for c in group.list_commands(err.ctx) if not getattr(group.get_command(err.ctx, c), "hidden", False)]
        err.message = f"No such command '{name}'{closest_names(name, names)}."


def _register_commands() -> None:
    from evalkit.cli import ask_command, caption_command, chat_command, demo_command, list_commands, \
        report_commands, run_command, score_commands
    from evalkit.cli import bench_command, convert_command, doctor_command, serve_command, tracking_commands

    for module in (run_command, demo_command, list_commands, score_commands, report_commands, caption_command,
                   ask_command, chat_command, bench_command, serve_command, convert_command, tracking_commands,
                   doctor_command):
        module.register(app)


_register_commands()

if __name__ == "__main__":
    main()
