"""Read official-format COCO caption files and score them like the official code, with checks.

Formats (those of ``pycocotools.coco.COCO`` and ``COCO.loadRes``, as used by ``COCOEvalCap``):

* annotations: ``{"images": [{"id": 391895, ...}, ...],
  "annotations": [{"image_id": 391895, "caption": "A man ...", ...}, ...]}``
* predictions ("results"): ``[{"image_id": 391895, "caption": "a man riding ..."}, ...]``

Files may be gzip-compressed (name ending in ``.gz``). Every problem is reported as a one-line
:class:`~evalkit.core.errors.EvalkitError` that names the file. Where the official code does something
questionable we are stricter, never silently different:

* duplicated ``image_id`` in predictions: ``loadRes`` keeps both, and ``COCOEvalCap`` then dies
  on ``assert(len(hypo) == 1)`` in BLEU. We reject them, naming the ids.
* predicted ids absent from the annotations: ``loadRes`` asserts ("Results do not correspond to
  current coco set"). We reject them, naming how many and the first few.
* annotated images without a prediction: ``COCOEvalCap`` scores ``coco.getImgIds()`` (all
  annotated images) and crashes on a missing prediction unless the caller sets
  ``params['image_id'] = cocoRes.getImgIds()``, which scores only the predicted images. We require
  full coverage unless ``allow_subset=True``, which is that official subset evaluation.
* an annotation repeated exactly (same ``id``, ``image_id`` and caption): the official code would
  count it as one more reference. It is a copy, not an annotation, so we reject it, naming the id. Two
  annotations with the same caption but different ids are kept, as the official code keeps them: COCO's
  own files hold such pairs, written independently by different annotators.
* annotated images without any caption: the official evaluation crashes on them, so the loader
  rejects them; captions whose ``image_id`` is not in ``images`` (ignored by the official code)
  are rejected as an inconsistent file.

Images are scored in the order of the annotation file's ``images`` list, as the official code does.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from evalkit.core.errors import EvalkitError
from evalkit.data.json_files import is_int, read_json_file
from evalkit.metrics.caption_metrics import CaptionScores, SpiceMode, score_captions
from evalkit.metrics.id_preview import first_ids

PathLike = str | os.PathLike[str]


def _id_problem(value: Any) -> str:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return f"must be an integer, got the string {value!r}"
    return f"must be an integer, got {type(value).__name__} {value!r}"


def load_caption_annotations(path: PathLike) -> dict[int, list[str]]:
    """Load official COCO caption annotations: image id -> reference captions.

    The dict follows the order of ``images`` (the official evaluation order); captions keep their
    file order. Raises :class:`EvalkitError` naming the file and the first bad entry.

    Example: ``{"images": [{"id": 1}], "annotations": [{"image_id": 1, "caption": "A cat."}]}``
    -> ``{1: ["A cat."]}``.
    """
    data = read_json_file(path, "caption annotation")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise EvalkitError(
            f"caption annotation file {path} must be a JSON object with 'images' and 'annotations' lists "
            "(official COCO caption format)")
    refs: dict[int, list[str]] = {}
    for k, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            raise EvalkitError(f"caption annotation file {path}: images[{k}] is not an object with an 'id'")
        if not is_int(image["id"]):
            raise EvalkitError(f"caption annotation file {path}: images[{k}].id {_id_problem(image['id'])}")
        if image["id"] in refs:
            raise EvalkitError(f"caption annotation file {path}: images[{k}] repeats image id {image['id']}")
        refs[image["id"]] = []
    unknown: list[int] = []
    seen: dict = {}  # annotation id -> (image id, caption)
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "caption" not in ann:
            raise EvalkitError(
                f"caption annotation file {path}: annotations[{k}] is not an object with 'image_id' and 'caption'")
        if not is_int(ann["image_id"]):
            raise EvalkitError(f"caption annotation file {path}: annotations[{k}].image_id {_id_problem(ann['image_id'])}")
        if not isinstance(ann["caption"], str):
            raise EvalkitError(f"caption annotation file {path}: annotations[{k}].caption is not a string")
        if "id" in ann and seen.get(_hashable(ann["id"])) == (ann["image_id"], ann["caption"]):
            raise EvalkitError(f"caption annotation file {path}: annotations[{k}] repeats annotation {ann['id']} "
                               f"(image {ann['image_id']}, the same caption); remove the copy")
        if "id" in ann:
            seen[_hashable(ann["id"])] = (ann["image_id"], ann["caption"])
        if ann["image_id"] in refs:
            refs[ann["image_id"]].append(ann["caption"])
        else:
            unknown.append(ann["image_id"])
    if unknown:
        ids = sorted(set(unknown))
        raise EvalkitError(
            f"caption annotation file {path}: {len(unknown)} caption(s) refer to {len(ids)} image id(s) "
            f"missing from 'images' (first: {first_ids(ids)})")
    empty = [i for i, caps in refs.items() if not caps]
    if empty:
        raise EvalkitError(
            f"caption annotation file {path}: {len(empty)} image(s) have no caption (first: {first_ids(empty)})")
    if not refs:
        raise EvalkitError(f"caption annotation file {path} has no images")
    return refs


def load_caption_predictions(path: PathLike) -> dict[int, str]:
    """Load official COCO caption results: image id -> predicted caption (file order).

    Format: ``[{"image_id": 1, "caption": "a cat"}, ...]``; other keys are ignored, an empty
    caption is valid (it scores 0). Duplicated image ids are an error (see module docstring).
    """
    data = read_json_file(path, "caption prediction")
    if not isinstance(data, list):
        raise EvalkitError(
            f"caption prediction file {path} must be a JSON list of {{\"image_id\": int, \"caption\": str}} objects")
    if not data:
        raise EvalkitError(f"caption prediction file {path} contains no predictions")
    preds: dict[int, str] = {}
    first_index: dict[int, int] = {}
    duplicates: list[str] = []
    for k, entry in enumerate(data):
        if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
            raise EvalkitError(
                f"caption prediction file {path}: entry [{k}] is not an object with 'image_id' and 'caption'")
        image_id, caption = entry["image_id"], entry["caption"]
        if not is_int(image_id):
            raise EvalkitError(f"caption prediction file {path}: entry [{k}] image_id {_id_problem(image_id)}")
        if not isinstance(caption, str):
            raise EvalkitError(
                f"caption prediction file {path}: entry [{k}] caption must be a string, got {type(caption).__name__}")
        if image_id in preds:
            duplicates.append(f"{image_id} (entries [{first_index[image_id]}] and [{k}])")
            continue
        preds[image_id] = caption
        first_index[image_id] = k
    if duplicates:
        raise EvalkitError(
            f"caption prediction file {path}: {len(duplicates)} duplicated image_id(s), one caption per image "
            f"is allowed (first: {', '.join(duplicates[:3])}{', ...' if len(duplicates) > 3 else ''})")
    return preds


def select_scored_images(
    references: Mapping[int, list[str]], predictions: Mapping[int, str], *, allow_subset: bool = False,
    predictions_path: PathLike | str = "predictions",
) -> dict[int, list[str]]:
    """The references of the images to score, in annotation order; checks id coverage both ways."""
    unknown = [i for i in predictions if i not in references]
    if unknown:
        raise EvalkitError(
            f"caption prediction file {predictions_path}: {len(unknown)} image_id(s) are not in the annotations "
            f"(first: {first_ids(unknown)})")
    missing = [i for i in references if i not in predictions]
    if missing and not allow_subset:
        raise EvalkitError(
            f"caption prediction file {predictions_path}: {len(missing)} of {len(references)} annotated images "
            f"have no prediction (first: {first_ids(missing)}); `evalkit score coco-caption --allow-subset` "
            "(allow_subset=True from Python) scores only the predicted images")
    return {i: refs for i, refs in references.items() if i in predictions}


def score_caption_files(
    annotations_path: PathLike,
    predictions_path: PathLike,
    spice: SpiceMode = "auto",
    *,
    allow_subset: bool = False,
    timeout_s: float | Mapping[str, float] | None = None,
) -> CaptionScores:
    """Score an official COCO caption results file against an annotation file.

    Equivalent to ``COCOEvalCap(COCO(annotations_path), coco.loadRes(predictions_path)).evaluate()``
    (with ``params['image_id'] = cocoRes.getImgIds()`` when ``allow_subset``), after the checks
    described in the module docstring; scores are on the 0-100 scale. See
    :func:`evalkit.metrics.caption_metrics.score_captions` for ``spice`` and ``timeout_s``.
    """
    references = load_caption_annotations(annotations_path)
    predictions = load_caption_predictions(predictions_path)
    scored = select_scored_images(references, predictions, allow_subset=allow_subset, predictions_path=predictions_path)
    return score_captions(scored, {i: predictions[i] for i in scored}, spice=spice, timeout_s=timeout_s)


def _hashable(value):
    return value if isinstance(value, (int, str)) else json.dumps(value, sort_keys=True)
