"""`evalkit ask --questions FILE.jsonl`: many images and questions, one JSON object per line.

Each line is ``{"image": "photo.jpg", "question": "what is on the table?"}`` or, for several questions
about one image, ``{"image": "photo.jpg", "questions": ["...", "..."]}``. A relative image path is taken
from the file's own folder; http(s) URLs are fetched. Blank lines are ignored; a bad line is an error
that names its line number.
"""

from __future__ import annotations

import json
from pathlib import Path

from evalkit.api.image_inputs import URL_PREFIXES
from evalkit.core.errors import EvalkitError


def read_questions_file(path: str | Path) -> list[tuple[str, str]]:
    """(image, question) pairs in file order."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalkitError(f"questions file {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EvalkitError(f"cannot read questions file {path}: {type(err).__name__}") from None
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalkitError(f"{where}: not valid JSON ({err.msg}, column {err.colno})") from None
        if not isinstance(entry, dict):
            raise EvalkitError(f"{where}: expected a JSON object with \"image\" and \"question\"")
        image = entry.get("image")
        if not isinstance(image, str) or not image.strip():
            raise EvalkitError(f"{where}: \"image\" must be a non-empty string (a path or URL)")
        questions = _questions_of(entry, where)
        image = image if image.startswith(URL_PREFIXES) else str(_beside(path, image))
        pairs += [(image, question) for question in questions]
    if not pairs:
        raise EvalkitError(f"questions file {path} holds no questions")
    return pairs


def _questions_of(entry: dict, where: str) -> list[str]:
    if "question" in entry and "questions" in entry:
        raise EvalkitError(f"{where}: give \"question\" or \"questions\", not both")
    if "question" in entry:
        questions = [entry["question"]]
    elif "questions" in entry and isinstance(entry["questions"], list):
        questions = entry["questions"]
    else:
        raise EvalkitError(f"{where}: needs \"question\" (a string) or \"questions\" (a list of strings)")
    if not questions or not all(isinstance(q, str) and q.strip() for q in questions):
        raise EvalkitError(f"{where}: every question must be a non-empty string")
    return [q.strip() for q in questions]


def _beside(file: Path, image: str) -> Path:
    candidate = Path(image).expanduser()
    return candidate if candidate.is_absolute() else file.parent / candidate
