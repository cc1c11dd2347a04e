"""COCO-style captioning sets: Karpathy split json, official COCO captions json, LAVIS json, HF datasets."""

from __future__ import annotations

from pathlib import Path

from evalkit.data.data_arg import DataArg, find_image_root, hf_column, load_hf_dataset, read_json
from evalkit.data.images import HF_ROW_PREFIX, ImageSource
from evalkit.core.sample_set import SampleSet, file_sha256
from evalkit.core.errors import EvalkitError
from evalkit.core.samples import Sample

FOLDER_CANDIDATES = ("dataset_coco.json", "dataset_flickr30k.json", "dataset_shapes.json", "annotations/captions_val2014.json",
                     "annotations/captions_val2017.json", "captions_val2014.json", "captions_val2017.json",
                     "coco_karpathy_test.json")


def load_caption_set(data: DataArg, split: str, images: Path | None = None,
                     columns: dict[str, str] | None = None) -> SampleSet:
    """Load a captioning evaluation set from whatever --data points at."""
    if data.is_hf:
        return _load_hf(data.hf_id, split, columns or {})
    path = data.path
    if path.is_dir():
        found = [path / name for name in FOLDER_CANDIDATES if (path / name).is_file()]
        if not found:
            raise EvalkitError(f"data folder {path} holds none of: {', '.join(FOLDER_CANDIDATES)}")
        path = found[0]
    content = read_json(path)
    if isinstance(content, dict) and isinstance(content.get("images"), list) and content["images"] \
            and "sentences" in content["images"][0]:
        return _load_karpathy(path, content, split, images)
    if isinstance(content, dict) and "annotations" in content and "images" in content:
        return _load_coco(path, content, images)
    if isinstance(content, list) and content and isinstance(content[0], dict) and "image" in content[0] \
            and "caption" in content[0]:
        return _load_lavis(path, content, images)
    raise EvalkitError(f"{path}: not a Karpathy split file, a COCO captions file or a LAVIS caption list")


def _identity(path: Path, fmt: str, split: str, n_total: int) -> dict:
    return {"format": fmt, "source": str(path), "split": split, "annotations_sha256": file_sha256(path),
            "n_total": n_total, "n_samples": n_total}


def _finish(samples: list[Sample], path: Path, fmt: str, split: str) -> SampleSet:
    if not samples:
        raise EvalkitError(f"{path}: no images in split {split!r}")
    references = {s.id: list(s.references) for s in samples}
    return SampleSet(samples, ImageSource(), _identity(path, fmt, split, len(samples)), annotations=references)


def _load_karpathy(path: Path, content: dict, split: str, images: Path | None) -> SampleSet:
    entries = [e for e in content["images"] if e.get("split") == split]
    if not entries:
        splits = sorted({e.get("split", "?") for e in content["images"]})
        raise EvalkitError(f"{path}: no images in split {split!r} (splits present: {', '.join(splits)})")
    rel = [str(Path(e.get("filepath", "")) / e["filename"]) for e in entries]
    root = images or find_image_root([path.parent, path.parent / "images", path.parent / "flickr30k-images",
                                      path.parent.parent, path.parent.parent / "flickr30k-images"], rel)
    samples = []
    for entry, rel_path in zip(entries, rel):
        image_id = entry.get("cocoid", entry.get("imgid"))
        refs = tuple(s["raw"].strip() for s in entry.get("sentences", []))
        if not refs:
            raise EvalkitError(f"{path}: image {image_id} has no sentences")
        samples.append(Sample(id=str(image_id), image=str(root / rel_path), references=refs))
    return _finish(samples, path, "karpathy", split)


def _load_coco(path: Path, content: dict, images: Path | None) -> SampleSet:
    refs: dict[int, list[str]] = {}
    for ann in content["annotations"]:
        try:
            refs.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
        except (KeyError, TypeError, ValueError):
            raise EvalkitError(f"{path}: annotation without image_id/caption: {str(ann)[:80]}") from None
    files = {int(img["id"]): img.get("file_name", "") for img in content["images"]}
    ordered = [i for i in files if i in refs]
    rel = [files[i] for i in ordered]
    subset = content.get("info", {}).get("description", "")
    guesses = [path.parent, path.parent / "images", path.parent.parent / "val2014", path.parent.parent / "val2017",
               path.parent / "val2014", path.parent / "val2017", path.parent.parent]
    root = images or find_image_root(guesses, rel)
    samples = [Sample(id=str(i), image=str(root / files[i]), references=tuple(refs[i])) for i in ordered]
    return _finish(samples, path, "coco", subset or "all")


def _load_lavis(path: Path, content: list, images: Path | None) -> SampleSet:
    rel = [e["image"] for e in content]
    root = images or find_image_root([path.parent, path.parent.parent], rel)
    samples = []
    for entry in content:
        stem = Path(entry["image"]).stem
        tail = stem.rsplit("_", 1)[-1]
        image_id = str(int(tail)) if tail.isdigit() else stem
        captions = entry["caption"] if isinstance(entry["caption"], list) else [entry["caption"]]
        samples.append(Sample(id=image_id, image=str(root / entry["image"]), references=tuple(captions)))
    return _finish(samples, path, "lavis", "test")


def _load_hf(hf_id: str, split: str, columns: dict[str, str]) -> SampleSet:
    dataset = load_hf_dataset(hf_id, split)
    image_col = hf_column(dataset, columns.get("image", "image"), hf_id)
    caption_col = hf_column(dataset, columns.get("captions", "captions"), hf_id)
    id_col = columns.get("id")
    if id_col:
        hf_column(dataset, id_col, hf_id)
    text_only = dataset.select_columns([c for c in (caption_col, id_col) if c])
    samples = []
    for row, record in enumerate(text_only):
        captions = record[caption_col]
        if isinstance(captions, str):
            captions = [captions]
        captions = [c["raw"] if isinstance(c, dict) else c for c in captions]
        image_id = str(record[id_col]) if id_col else str(row)
        samples.append(Sample(id=image_id, image=f"{HF_ROW_PREFIX}{row}", references=tuple(captions)))
    identity = {"format": "hf", "source": hf_id, "split": split,
                "fingerprint": getattr(dataset, "_fingerprint", ""), "n_total": len(samples),
                "n_samples": len(samples)}
    references = {s.id: list(s.references) for s in samples}
    return SampleSet(samples, ImageSource(dataset, image_col), identity, annotations=references)
