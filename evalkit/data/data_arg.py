"""Parse the --data argument: a file, a folder, ``hf:<dataset id or local dataset dir>``, or a pinned hub source
``hf:ORG/NAME@REVISION?split=glob`` (evalkit.data.hub_datasets)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalkit.core.errors import EvalkitError

HF_PREFIX = "hf:"


@dataclass(frozen=True)
class DataArg:
    """What the user pointed --data at."""

    raw: str
    hf_id: str | None = None
    path: Path | None = None
    hub: Any = None  # evalkit.data.hub_datasets.HubSource for ``hf:ORG/NAME@REVISION...``

    @property
    def is_hf(self) -> bool:
        """True for ``hf:...`` sources."""
        return self.hf_id is not None


def parse_data_arg(raw: str) -> DataArg:
    """``hf:ID`` -> Hugging Face dataset (``hf:ID@REV?split=glob``: pinned hub files); anything else must be an
    existing file or folder."""
    if raw.startswith(HF_PREFIX):
        hf_id = raw[len(HF_PREFIX):].strip()
        if not hf_id:
            raise EvalkitError("--data hf: needs a dataset id, e.g. hf:org/name")
        if "@" in hf_id:
            from evalkit.data.hub_datasets import parse_hub_source

            hub = parse_hub_source(hf_id)
            return DataArg(raw, hf_id=hub.repo_id, hub=hub)
        return DataArg(raw, hf_id=hf_id)
    path = Path(raw).expanduser()
    if not path.exists():
        raise EvalkitError(f"data path {raw} does not exist")
    return DataArg(raw, path=path)


def read_json(path: Path) -> Any:
    """JSON from a file; a one-line error naming the file when it is missing or malformed."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise EvalkitError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise EvalkitError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise EvalkitError(f"{path}: cannot read ({err})") from None


def find_image_root(candidates: list[Path], relative_paths: list[str]) -> Path:
    """The first candidate folder in which the first few images exist (else the first candidate)."""
    probe = relative_paths[:3]
    for root in candidates:
        if probe and all((root / rel).is_file() for rel in probe):
            return root
    return candidates[0]


def load_hf_dataset(hf_id: str, split: str):
    """``datasets.load_dataset`` with a one-line error; a local folder (parquet, save_to_disk) works offline."""
    import datasets

    local = Path(hf_id).expanduser()
    try:
        if local.is_dir() and (local / "dataset_info.json").is_file():
            loaded = datasets.load_from_disk(str(local))
            return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
        return datasets.load_dataset(str(local) if local.is_dir() else hf_id, split=split)
    except Exception as err:  # noqa: BLE001 - datasets raises many types; all mean "cannot load"
        message = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise EvalkitError(f"cannot load Hugging Face dataset {hf_id!r} split {split!r}: {message}") from None


def hf_column(dataset, column: str, hf_id: str) -> str:
    """Check that a mapped column exists; one-line error listing the columns otherwise."""
    if column not in dataset.column_names:
        raise EvalkitError(f"dataset {hf_id!r} has no column {column!r} (columns: {', '.join(dataset.column_names)}); "
                           "set the column mapping with --column NAME=COLUMN")
    return column
