"""`evalkit convert lavis` (a LAVIS `.pth` -> a checkpoint folder) and `evalkit convert to-lavis` (the reverse)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

out = Console()
convert_app = typer.Typer(no_args_is_help=True, help="Convert BLIP-2 checkpoints between LAVIS and transformers.")


@convert_app.command("lavis")
def convert_lavis(
    checkpoint: Path = typer.Argument(..., help="LAVIS .pth (state dict under \"model\", or bare)"),
    family: str = typer.Option(..., "--family", help="opt | t5 | itm"),
    base: Optional[str] = typer.Option(None, "--base", help="registry name, hub id or folder completing the "
                                       "frozen weights, config, tokenizer and processor (default: the family's "
                                       "pretrained checkpoint)"),
    out_dir: Path = typer.Option(..., "--out", help="new folder to write (evalkit run --model DIR loads it)"),
) -> None:
    """A LAVIS BLIP-2 checkpoint -> a transformers folder, every key accounted for."""
    from evalkit.models.lavis_convert import RECORD_FILE, convert_lavis_checkpoint

    record = convert_lavis_checkpoint(checkpoint, family, base, out_dir)
    out.print(f"wrote {out_dir}: {record['from_lavis']['count']} weights from {checkpoint}, "
              f"{record['from_base']['count']} from --base {record['base']}; "
              f"{len(record['dropped_lavis_keys'])} LAVIS-only keys dropped, "
              f"{len(record['config_changes'])} config fields set to LAVIS's values (see {RECORD_FILE})",
              highlight=False, soft_wrap=True)


@convert_app.command("to-lavis")
def convert_to_lavis(
    model: str = typer.Argument(..., help="registry name, hub id or folder of a transformers BLIP-2 checkpoint"),
    out_file: Path = typer.Option(..., "--out", help=".pth to write ({\"model\": state_dict}, as LAVIS saves)"),
) -> None:
    """A transformers BLIP-2 checkpoint -> a LAVIS state dict (the vision key bias is dropped: softmax ignores it)."""
    from evalkit.core.errors import EvalkitError
    from evalkit.models.catalog import resolve_model
    from evalkit.models.lavis_convert import hf_folder_to_lavis, save_lavis_checkpoint
    from evalkit.models.lavis_keys import LavisKeyError
    from evalkit.models.loading import checkpoint_directory

    if out_file.exists():
        raise EvalkitError(f"--out {out_file} exists; choose a new file")
    directory = checkpoint_directory(resolve_model(model).source)
    try:
        state, _, notes = hf_folder_to_lavis(directory)
    except LavisKeyError as err:
        raise EvalkitError(f"{directory}: {err}") from None
    save_lavis_checkpoint(state, out_file)
    out.print(f"wrote {out_file}: {len(state)} LAVIS keys; " + "; ".join(notes), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `convert` to the evalkit app."""
    app.add_typer(convert_app, name="convert")
