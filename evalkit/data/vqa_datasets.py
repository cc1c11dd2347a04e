"""VQAv2-style sets: the official question/annotation files + COCO image folders, or a HF dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from evalkit.data.data_arg import DataArg, find_image_root, hf_column, load_hf_dataset, read_json
from evalkit.data.images import HF_ROW_PREFIX, ImageSource
from evalkit.core.sample_set import SampleSet, file_sha256
from evalkit.core.errors import EvalkitError
from evalkit.core.samples import Sample

# split name -> the official data_subtype in file names
SUBTYPES = {"val": "val2014", "train": "train2014", "test-dev": "test-dev2015", "test": "test2015"}
# the official VQA API's image file name rule: COCO_<subtype>_<12-digit id>.jpg in <subtype>/
DEFAULT_IMAGE_PATTERN = "{image_subtype}/COCO_{image_subtype}_{image_id:012d}.jpg"


def load_vqa_set(data: DataArg, split: str, images: Path | None = None,
                 columns: Mapping[str, str] | None = None) -> SampleSet:
    """Questions (+ annotations when the split has them) as samples, one per question."""
    columns = dict(columns or {})
    if data.hub is not None:
        return load_hub_vqa(data.hub, split, columns)
    if data.is_hf:
        return _load_hf(data.hf_id, split, columns)
    questions_path, annotations_path = _find_files(data.path, split)
    from evalkit.data.vqav2_files import load_annotations, load_questions

    questions = load_questions(questions_path)
    annotations = load_annotations(annotations_path) if annotations_path else None
    by_id = None
    if annotations is not None:
        by_id = {int(a["question_id"]): a for a in annotations}
        question_ids = {int(q["question_id"]) for q in questions}
        unanswered = [q for q in question_ids if q not in by_id]
        orphans = [a for a in by_id if a not in question_ids]
        if unanswered:
            raise EvalkitError(f"{annotations_path}: {len(unanswered)} questions have no annotation "
                               f"(first: {sorted(unanswered)[:3]})")
        if orphans:
            raise EvalkitError(f"{annotations_path}: {len(orphans)} annotations have no question "
                               f"(first: {sorted(orphans)[:3]})")
    content = read_json(questions_path)
    subtype = content.get("data_subtype", SUBTYPES.get(split, split)) if isinstance(content, dict) else split
    image_subtype = "test2015" if str(subtype).startswith("test-dev") else subtype
    pattern = columns.get("image_pattern", DEFAULT_IMAGE_PATTERN)
    rel = {}
    for q in questions:
        image_id = int(q["image_id"])
        if image_id not in rel:
            try:
                rel[image_id] = pattern.format(image_id=image_id, subtype=subtype, image_subtype=image_subtype)
            except (KeyError, ValueError) as err:
                raise EvalkitError(f"bad image_pattern {pattern!r}: {err}") from None
    base = questions_path.parent
    root = images or find_image_root([base, base / "images", base.parent, base.parent / "images"], list(rel.values()))
    first = next(iter(rel.values()), "")
    if first and not (root / first).is_file() and (root / Path(first).name).is_file():
        rel = {k: Path(v).name for k, v in rel.items()}  # images kept flat, without the <subtype>/ folder
    samples = []
    for q in questions:
        qid = int(q["question_id"])
        ann = by_id[qid] if by_id else {}
        answers = tuple(a["answer"] for a in ann.get("answers", ()))
        meta = (("image_id", int(q["image_id"])), ("question_type", ann.get("question_type", "")),
                ("answer_type", ann.get("answer_type", "")))
        samples.append(Sample(id=str(qid), image=str(root / rel[int(q["image_id"])]), question=q["question"],
                              references=answers, meta=meta))
    identity = {"format": "vqav2", "source": str(questions_path), "split": split, "data_subtype": subtype,
                "questions_sha256": file_sha256(questions_path),
                "annotations_sha256": file_sha256(annotations_path) if annotations_path else None,
                "n_total": len(samples), "n_samples": len(samples), "n_images": len(rel)}
    return SampleSet(samples, ImageSource(), identity, annotations=by_id)


def _find_files(path: Path, split: str) -> tuple[Path, Path | None]:
    subtype = SUBTYPES.get(split, split)
    if path.is_file():
        questions = path
    else:
        found = sorted(path.glob(f"*OpenEnded*_{subtype}_questions.json")) or \
            sorted(path.glob(f"*OpenEnded*_{split}_questions.json"))
        if not found:
            raise EvalkitError(f"data folder {path} has no *OpenEnded*_{subtype}_questions.json for split {split!r}")
        questions = found[0]
    candidates = [questions.with_name(questions.name.replace("OpenEnded_", "").replace("questions", "annotations")),
                  *sorted(questions.parent.glob(f"*{subtype}*annotations.json"))]
    annotations = next((c for c in candidates if c.is_file() and c != questions), None)
    if annotations is None and not subtype.startswith("test"):
        raise EvalkitError(f"no annotation file beside {questions} (expected {candidates[0].name}); "
                           "only test splits may come without answers")
    return questions, annotations


def _load_hf(hf_id: str, split: str, columns: dict[str, str]) -> SampleSet:
    dataset = load_hf_dataset(hf_id, split)
    names = {key: columns.get(key, key) for key in ("image", "question", "question_id", "answers", "question_type",
                                                    "answer_type", "image_id")}
    for key in ("image", "question", "question_id"):
        hf_column(dataset, names[key], hf_id)
    has_answers = names["answers"] in dataset.column_names
    text_columns = [c for k, c in names.items() if k != "image" and c in dataset.column_names]
    samples, by_id = [], {} if has_answers else None
    first_row: dict = {}  # image id -> the first row holding it, so an image's questions share one image key
    for row, record in enumerate(dataset.select_columns(text_columns)):
        qid = int(record[names["question_id"]])
        answers = []
        if has_answers:
            answers = human_answers(record[names["answers"]], names["answers"],
                                    f"dataset {hf_id!r} row {row} (question {qid})")
            by_id[qid] = {"question_id": qid, "question_type": record.get(names["question_type"], ""),
                          "answer_type": record.get(names["answer_type"], ""),
                          "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]}
        image_id = record.get(names["image_id"], row)
        image_row = first_row.setdefault(image_id, row)
        meta = (("image_id", image_id), ("question_type", record.get(names["question_type"], "")),
                ("answer_type", record.get(names["answer_type"], "")))
        samples.append(Sample(id=str(qid), image=f"{HF_ROW_PREFIX}{image_row}", question=record[names["question"]],
                              references=tuple(answers), meta=meta))
    identity = {"format": "hf", "source": hf_id, "split": split, "fingerprint": getattr(dataset, "_fingerprint", ""),
                "n_total": len(samples), "n_samples": len(samples)}
    return SampleSet(samples, ImageSource(dataset, names["image"]), identity, annotations=by_id)


def load_hub_vqa(source, split: str, columns: Mapping[str, str]) -> SampleSet:
    """A VQA split from parquet files at a pinned hub revision (VQAv2, OK-VQA); images decoded when asked for.

    Questions of one image share the key of the image's first row (by the ``image_id`` column when there is
    one), so an image whose bytes repeat in every question's row is decoded once.
    """
    from evalkit.data.hub_datasets import HubImageSource, describe_config, hub_identity, hub_split_name, open_split

    files, table = open_split(source, split)
    columns = source.column_map({key: columns.get(key, key) for key in ("image", "question", "question_id",
                                 "answers", "question_type", "answer_type", "image_id")}, table.column_names)
    names = {key: columns.get(key, key) for key in ("image", "question", "question_id", "answers", "question_type",
                                                    "answer_type", "image_id")}
    what = f"dataset {source.repo_id}@{source.revision}"
    table.check_columns([names["image"], names["question"], names["question_id"]], what)
    has_answers = names["answers"] in table.column_names
    text_columns = [c for k, c in names.items() if k != "image" and c in table.column_names]
    samples, by_id = [], {} if has_answers else None
    first_row: dict = {}  # image id -> the key of the first row holding it
    for key, record in table.iter_rows(text_columns, f"preparing {source.repo_id} {split}"):
        qid = _question_id(record[names["question_id"]])
        answers = human_answers(record.get(names["answers"]), names["answers"], f"{what} row {key} (question {qid})") \
            if has_answers else []
        if has_answers:
            by_id[qid] = {"question_id": qid, "question_type": record.get(names["question_type"]) or "",
                          "answer_type": record.get(names["answer_type"]) or "",
                          "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)]}
        image_id = record.get(names["image_id"])
        image_key = first_row.setdefault(image_id, key) if image_id is not None else key
        meta = (("image_id", image_id if image_id is not None else ""),
                ("question_type", record.get(names["question_type"]) or ""),
                ("answer_type", record.get(names["answer_type"]) or ""))
        samples.append(Sample(id=str(qid), image=image_key, question=record[names["question"]],
                              references=tuple(answers), meta=meta))
    identity = hub_identity(files, split, hub_split_name(files.relative), describe_config(files.relative),
                            len(samples), n_images=len(first_row) if first_row else len(samples))
    return SampleSet(samples, HubImageSource(files.paths, names["image"]), identity, annotations=by_id)


def _question_id(value):
    """Question ids as int when they are digits (VQAv2 ints, OK-VQA digit strings), else the string."""
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def human_answers(raw, column: str, where: str) -> list[str]:
    """The human answers of one question: a list of {answer, ...} records (VQAv2), of strings (OK-VQA), or a columnar
    struct {answer: [...]}, exactly ANSWERS_PER_QUESTION of them as the file loader requires; anything else (a string
    column such as multiple_choice_answer, 9 answers) is a one-line error naming the column and the row."""
    from evalkit.data.vqav2_files import ANSWERS_PER_QUESTION

    if isinstance(raw, dict) and "answer" in raw:
        raw = raw["answer"]
    if not isinstance(raw, (list, tuple)) or not all(
            isinstance(a, str) or (isinstance(a, dict) and isinstance(a.get("answer"), str)) for a in raw):
        shown = repr(raw)[:60]
        raise EvalkitError(f"{where}: column {column!r} holds {shown}, not a list of {ANSWERS_PER_QUESTION} answers "
                           "(answer records or strings); map the answers column with --column answers=COLUMN")
    if len(raw) != ANSWERS_PER_QUESTION:
        raise EvalkitError(f"{where}: column {column!r} has {len(raw)} answers, not {ANSWERS_PER_QUESTION} (VQA "
                           "accuracy averages over the 10 human answers, as the official files have them)")
    return [a["answer"] if isinstance(a, dict) else a for a in raw]
