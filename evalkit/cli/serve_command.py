"""`evalkit serve`: the web app (try a model on an image; browse runs and comparisons), on this machine only
unless a password is given. Gradio, torch and transformers are imported inside the command, never at import."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from evalkit.core.errors import EvalkitError

EXTRA_MISSING = "evalkit serve needs the serve extra: pip install 'evalkit[serve]'"


def serve(
    model: List[str] = typer.Option([], "--model", "-m",
                                    help="also offer this model (registry name, hub id or folder; repeatable)"),
    results: Path = typer.Option(Path("results"), "--results", help="results folder the Runs tab shows"),
    host: str = typer.Option("127.0.0.1", help="address to listen on; anything but loopback needs --auth"),
    port: int = typer.Option(7860, help="port to listen on"),
    auth: Optional[str] = typer.Option(None, help="USER:PASSWORD, or a file whose first line is that"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps"),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (default: per model family)"),
    queue_size: int = typer.Option(16, help="requests that may wait for the model; more are turned away"),
    max_upload_mb: float = typer.Option(20.0, help="largest image accepted, in MiB"),
) -> None:
    """A local web app: caption, ask and chat about an image; the leaderboard, a run's samples, comparisons."""
    from evalkit.serve.access import check_host, parse_auth

    credentials = parse_auth(auth)
    check_host(host, credentials)
    if not 0 < port < 65536 or queue_size < 1 or max_upload_mb <= 0:
        raise EvalkitError("--port must be 1-65535, --queue-size at least 1 and --max-upload-mb positive")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # the server never contacts the network on its own
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise EvalkitError(EXTRA_MISSING) from None
    from evalkit.serve.app import launch

    launch(models=model, results=results, host=host, port=port, auth=credentials, device=device, dtype=dtype,
           queue_size=queue_size, max_upload_mb=max_upload_mb)


def register(app: typer.Typer) -> None:
    """Add `serve` to the evalkit app."""
    app.command()(serve)
