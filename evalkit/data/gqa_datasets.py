"""GQA from the hub: questions (``*_instructions`` config) joined with images (``*_images`` config) on imageId."""

from __future__ import annotations

from typing import Mapping

from evalkit.core.errors import EvalkitError
from evalkit.core.sample_set import SampleSet
from evalkit.core.samples import Sample
from evalkit.data.data_arg import DataArg


def load_gqa_set(data: DataArg, split: str, images=None, columns: Mapping[str, str] | None = None) -> SampleSet:
    """One sample per question, its image the row of the images config whose ``id`` equals ``imageId``.

    ``data`` must be a pinned hub source with files for ``SPLIT`` (questions) and ``SPLIT.images``.
    """
    from evalkit.data.hub_datasets import HubImageSource, describe_config, hub_identity, hub_split_name, open_split

    if data.hub is None:
        raise EvalkitError("gqa reads a pinned hub source (hf:ORG/NAME@REV?SPLIT=GLOB&SPLIT.images=GLOB); "
                           f"got {data.raw!r}")
    source = data.hub
    columns = dict(columns or {})
    question_files, questions_table = open_split(source, split)
    image_files, images_table = open_split(source, split, "images")
    what = f"dataset {source.repo_id}@{source.revision}"
    image_id_col, image_col = columns.get("image_id", "id"), columns.get("image", "image")
    images_table.check_columns([image_id_col, image_col], f"{what} ({describe_config(image_files.relative)})")
    q_cols = {k: columns.get(k, d) for k, d in (("question_id", "id"), ("image_ref", "imageId"),
                                                ("question", "question"), ("answer", "answer"))}
    questions_table.check_columns([q_cols["question_id"], q_cols["image_ref"], q_cols["question"]],
                                  f"{what} ({describe_config(question_files.relative)})")
    key_of = {str(record[image_id_col]): key for key, record in
              images_table.iter_rows([image_id_col], f"indexing {source.repo_id} {split} images")}
    has_answer = q_cols["answer"] in questions_table.column_names
    wanted = [c for c in q_cols.values() if c in questions_table.column_names]
    samples, missing = [], []
    for _, record in questions_table.iter_rows(wanted, f"preparing {source.repo_id} {split}"):
        image_ref = str(record[q_cols["image_ref"]])
        if image_ref not in key_of:
            missing.append(image_ref)
            continue
        answer = record.get(q_cols["answer"]) if has_answer else None
        samples.append(Sample(id=str(record[q_cols["question_id"]]), image=key_of[image_ref],
                              question=record[q_cols["question"]],
                              references=(answer,) if answer is not None else (),
                              meta=(("image_id", image_ref),)))
    if missing:
        raise EvalkitError(f"{what}: {len(missing)} questions name an image not in the images config "
                           f"(first: {missing[0]})")
    identity = hub_identity(question_files, split, hub_split_name(question_files.relative),
                            describe_config(question_files.relative), len(samples), n_images=len(key_of),
                            image_files=dict(image_files.identity(), config=describe_config(image_files.relative)))
    answers = {s.id: s.references[0] for s in samples} if has_answer else None  # None: a split to submit
    return SampleSet(samples, HubImageSource(image_files.paths, image_col), identity, annotations=answers)
