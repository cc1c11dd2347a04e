"""`evalkit score coco-caption|vqav2`: score a predictions file alone, without a model."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

out = Console()
score_app = typer.Typer(no_args_is_help=True, help="Score a predictions file alone, without a model.")


@score_app.command("coco-caption")
def score_coco_caption(
    annotations: Path = typer.Option(..., help="COCO-format caption annotations (captions_*.json)"),
    predictions: Path = typer.Option(..., help='official result format: [{"image_id":..,"caption":..}]'),
    allow_subset: bool = typer.Option(False, "--allow-subset",
                                      help="score only the annotated images that have a prediction (not reportable: "
                                           "CIDEr's idf depends on the set)"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Score a captions file with pycocoevalcap (BLEU, METEOR, ROUGE-L, CIDEr; SPICE when offline-capable)."""
    from evalkit.data.coco_caption_files import score_caption_files

    scores = score_caption_files(annotations, predictions, allow_subset=allow_subset)
    if json_out:
        print(json.dumps({"scale": scores.scale, "n_images": scores.n_images, "metrics": scores.corpus,
                          "skipped": scores.skipped}, indent=2))
        return
    table = Table(title=f"coco-caption · {predictions.name} · {scores.n_images} images")
    table.add_column("metric")
    table.add_column("value (0-100)", justify="right")
    for name, value in scores.corpus.items():
        table.add_row(name, f"{value:.2f}")
    for name, reason in scores.skipped.items():
        table.add_row(name, f"skipped: {reason}")
    out.print(table)


@score_app.command("vqav2")
def score_vqav2(
    questions: Path = typer.Option(..., help="v2_OpenEnded_mscoco_*_questions.json"),
    annotations: Path = typer.Option(..., help="v2_mscoco_*_annotations.json"),
    predictions: Path = typer.Option(..., help='official result format: [{"question_id":..,"answer":..}]'),
    vqa_metric: str = typer.Option("official", help="official, lavis or lmms"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Score VQA answers with the official VQA accuracy (vqaEval.py rules, quirks included)."""
    from evalkit.data.vqav2_files import score_vqa_files

    scores = score_vqa_files(questions, annotations, predictions, variant=vqa_metric)
    if json_out:
        print(json.dumps(scores.to_json(), indent=2))
        return
    table = Table(title=f"vqav2 · {predictions.name} · {scores.n} questions · {vqa_metric}")
    table.add_column("answer type")
    table.add_column("accuracy (0-100)", justify="right")
    table.add_row("overall", f"{scores.overall:.2f}")
    for name, value in sorted(scores.per_answer_type.items()):
        table.add_row(name, f"{value:.2f}")
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add `score` to the evalkit app."""
    app.add_typer(score_app, name="score")
