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
    if data.hub is not None:
        return load_hub_captions(data.hub, split, columns or {})
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


def load_hub_captions(source, split: str, columns: dict[str, str]) -> SampleSet:
    """Images with reference captions from parquet files at a pinned hub revision, images decoded when asked for.

    ``columns``: ``image``, ``captions`` (a list of strings, or of {raw: ...}), ``id`` (the image id the
    official result file needs; when the id column is absent, the digits of a ``filename`` /
    ``image_file_name`` column), and optionally ``domain`` (kept in each sample's meta, e.g. NoCaps).
    """
    from evalkit.data.hub_datasets import HubImageSource, describe_config, hub_identity, hub_split_name, open_split

    files, table = open_split(source, split)
    columns = source.column_map(columns, table.column_names)
    what = f"dataset {source.repo_id}@{source.revision}"
    image_col, caption_col = columns.get("image", "image"), columns.get("captions", "captions")
    table.check_columns([image_col, caption_col], what)
    id_col = columns.get("id")
    if id_col not in table.column_names:
        id_col = next((c for c in (columns.get("filename"), "filename", "image_file_name", "file_name")
                       if c and c in table.column_names), None)
        if id_col is None:
            raise EvalkitError(f"{what} has no image id column {columns.get('id')!r} and no file name column "
                               f"(columns: {', '.join(table.column_names)}); set one with --column id=COLUMN")
    domain_col = columns.get("domain") if columns.get("domain") in table.column_names else None
    domains = _domain_file(columns.get("domain_file")) if columns.get("domain_file") else None
    domain_key = next((c for c in (columns.get("domain_key"), "image_file_name", id_col) if c in table.column_names),
                      id_col) if domains is not None else None
    samples, unlabelled = [], []
    wanted = list(dict.fromkeys(c for c in (caption_col, id_col, domain_col, domain_key) if c))
    for key, record in table.iter_rows(wanted, f"preparing {source.repo_id} {split}"):
        captions = record[caption_col]
        captions = [captions] if isinstance(captions, str) else list(captions or [])
        captions = [c["raw"] if isinstance(c, dict) else str(c) for c in captions]
        domain = record[domain_col] if domain_col else None
        if domains is not None:
            label = str(record[domain_key])
            domain = domains.get(label) or domains.get(Path(label).stem)
            if domain is None:
                unlabelled.append(label)
        meta = (("domain", domain),) if domain else ()
        samples.append(Sample(id=_image_id(record[id_col]), image=key, references=tuple(captions), meta=meta))
    if not samples:
        raise EvalkitError(f"{what}: no rows in split {split!r}")
    if unlabelled:
        raise EvalkitError(f"{columns['domain_file']}: no domain for {len(unlabelled)} images "
                           f"(first: {unlabelled[0]}); is it the annotation file of this split?")
    extra = {"domain_file": columns["domain_file"], "domain_file_sha256": file_sha256(columns["domain_file"])} \
        if domains is not None else {}
    identity = hub_identity(files, split, hub_split_name(files.relative), describe_config(files.relative),
                            len(samples), id_column=id_col, **extra)
    references = {s.id: list(s.references) for s in samples}
    return SampleSet(samples, HubImageSource(files.paths, image_col), identity, annotations=references)


def _image_id(value) -> str:
    """An image id: the value itself, or the number in a file name (COCO_val2014_000000391895.jpg -> 391895)."""
    text = str(value).strip()
    stem = Path(text).stem if "." in text else text
    tail = stem.rsplit("_", 1)[-1]
    return str(int(tail)) if tail.isdigit() else stem


def _domain_file(path: str) -> dict[str, str]:
    """Image file name / stem / Open Images id -> domain, from the official nocaps annotation file
    (``{"images": [{"file_name", "open_images_id", "domain", ...}]}``)."""
    content = read_json(Path(path).expanduser())
    images = content.get("images") if isinstance(content, dict) else None
    if not isinstance(images, list) or not images or "domain" not in images[0]:
        raise EvalkitError(f"{path}: not a nocaps annotation file (expected images with a 'domain' field)")
    domains = {}
    for image in images:
        for key in ("file_name", "open_images_id", "id"):
            if image.get(key) is not None:
                domains[str(image[key])] = image["domain"]
        if image.get("file_name"):
            domains[Path(image["file_name"]).stem] = image["domain"]
    return domains
