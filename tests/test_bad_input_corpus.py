"""The bad-input corpus: options, the results folder, checkpoints and images a hostile user might hand `evalkit run`.

Every case ends in a one-line error naming the file or value with exit 2 (and no run.json), or in documented
graceful handling (exit 0, the bad image recorded as a failed sample). Never a traceback, never "internal error".
Runs use the bundled tiny model on a handful of samples.
"""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, write_karpathy
from permission_bits import permission_bits_enforced
from evalkit.demo.bundled import MODELS_DIR

SHAPES = ["run", "shapes-caption", "-m", "blip2-tiny-opt", "--limit", "2", "-q"]
FAST = ["--num-beams", "1", "--max-new-tokens", "5", "--min-new-tokens", "1", "--min-length", "0", "-q"]


def assert_one_line_error(code: int, err: str, *named: str, results: Path | None = None) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1, err
    for text in named:
        assert text in err, f"{text!r} not named in: {err}"
    if results is not None:
        assert not list(results.rglob("run.json")), "a failed run wrote run.json"


# ---------------------------------------------------------------------------------------------- options

@pytest.mark.parametrize("args, named", [
    (["--batch-size", "-1"], ["--batch-size", "-1"]),
    (["--batch-size", "0"], ["--batch-size", "0"]),
    (["--device-map", "everywhere"], ["--device-map", "everywhere"]),
    (["--image-size", "7"], ["--image-size 7", "patch"]),
    (["--image-size", "0"], ["--image-size", "0"]),
    (["--limit", "0"], ["--limit", "0"]),
    (["--limit", "-3"], ["--limit", "-3"]),
    (["--num-beams", "0"], ["--num-beams", "0"]),
    (["--max-new-tokens", "0"], ["--max-new-tokens", "0"]),
    (["--min-new-tokens", "5", "--max-new-tokens", "2"], ["min_new_tokens 5", "max_new_tokens 2"]),
    (["--dtype", "float8"], ["float8"]),
    (["--device", "tpu:9"], ["tpu:9"]),
    (["--k", "-1"], ["--k", "-1"]),
    (["--run-id", "../escape"], ["--run-id", "../escape"]),
])
def test_bad_option(args, named, tmp_path, capsys):
    results = tmp_path / "r"
    code, _, err = run_cli([*SHAPES, "--results", str(results), *args], capsys)
    assert_one_line_error(code, err, *named, results=results)


# ---------------------------------------------------------------------------------------------- results folder

def test_results_is_a_file(tmp_path, capsys):
    results = tmp_path / "results.txt"
    results.write_text("not a folder")
    code, _, err = run_cli([*SHAPES, "--results", str(results)], capsys)
    assert_one_line_error(code, err, str(results), "not a folder")
    assert results.read_text() == "not a folder"


def test_results_below_a_file(tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    code, _, err = run_cli([*SHAPES, "--results", str(blocker / "r")], capsys)
    assert_one_line_error(code, err, str(blocker / "r"), f"{blocker} above it is a file")


def test_results_in_a_read_only_folder(tmp_path, capsys):
    """A folder the process may not write to. Root writes through the mode bits (CAP_DAC_OVERRIDE), so the run goes
    inside permission_bits_enforced (tests/permission_bits.py drops those capabilities): the kernel refuses the
    writes as it refuses an ordinary user's, and evalkit's own check meets a real refusal, nothing patched."""
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    try:
        with permission_bits_enforced():
            with pytest.raises(PermissionError):  # the refusal is real in here
                (read_only / "probe").write_text("x")
            code, _, err = run_cli([*SHAPES, "--results", str(read_only / "r")], capsys)
    finally:
        read_only.chmod(0o755)
    assert_one_line_error(code, err, str(read_only), "cannot write", results=read_only)
    assert not any(read_only.iterdir())


# ---------------------------------------------------------------------------------------------- checkpoints

def _checkpoint_copy(tmp_path: Path, change) -> Path:
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "ckpt"
    shutil.copytree(MODELS_DIR / "blip2-tiny-opt", copy)
    weights = copy / "model.safetensors"
    if change == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif change == "garbage":
        weights.write_bytes(b"this is not a safetensors file")
    elif change == "delete-file":
        weights.unlink()
    else:
        tensors = load_file(weights)
        change(tensors)
        save_file(tensors, weights, metadata={"format": "pt"})
    return copy


MISSING = "language_model.model.decoder.layers.0.fc1.weight"


@pytest.mark.parametrize("change, named", [
    (lambda t: t.pop(MISSING), ["1 missing weight", MISSING]),
    (lambda t: t.__setitem__("bogus.extra.weight", t[MISSING].clone()), ["1 unexpected weight", "bogus.extra.weight"]),
    ("truncate", ["model.safetensors", "truncated or corrupt"]),
    ("garbage", ["model.safetensors", "truncated or corrupt"]),
    ("delete-file", ["no weight files"]),
], ids=["missing-key", "unexpected-key", "truncated", "garbage", "no-weights"])
def test_bad_checkpoint(change, named, tmp_path, capsys):
    checkpoint = _checkpoint_copy(tmp_path, change)
    results = tmp_path / "r"
    code, _, err = run_cli(["run", "shapes-caption", "-m", str(checkpoint), "--limit", "2", "-q",
                            "--results", str(results)], capsys)
    assert_one_line_error(code, err, *named, results=results)


# ---------------------------------------------------------------------------------------------- images

def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge image over a few bytes of data: what a decompression bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _write_bad(path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    if kind == "bomb":
        path.write_bytes(_png_header_only(40_000, 40_000))
    elif kind == "bomb-warning":
        path.write_bytes(_png_header_only(10_000, 10_000))
    elif kind == "float":
        Image.frombytes("F", (8, 8), rng.random((8, 8)).astype("<f4").tobytes()).save(path, format="TIFF")
    elif kind == "int32-out-of-range":
        Image.frombytes("I", (2, 1), np.array([0, 1 << 20], dtype="<i4").tobytes()).save(path, format="TIFF")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, I am not an image\n")


def _test_images(karpathy_dir: Path) -> list[Path]:
    entries = json.loads((karpathy_dir / "dataset_coco.json").read_text())["images"]
    return [karpathy_dir / "val2017" / e["filename"] for e in entries if e["split"] == "test"]


@pytest.mark.parametrize("kind, named", [
    ("bomb", "decompression bomb"),
    ("bomb-warning", "decompression bomb"),
    ("float", "mode F"),
    ("int32-out-of-range", "outside 0..65535"),
    ("empty", "cannot decode"),
    ("text", "cannot decode"),
])
def test_bad_image_is_named(kind, named, tmp_path, capsys):
    write_karpathy(tmp_path)
    victim = _test_images(tmp_path)[0]
    _write_bad(victim, kind)
    results = tmp_path / "r"
    args = ["run", "coco-caption", "-m", "blip2-tiny-opt", "--data", str(tmp_path), "--results", str(results), *FAST]
    import warnings

    with warnings.catch_warnings():
        if kind == "bomb-warning":  # PIL only warns below twice MAX_IMAGE_PIXELS; as an error it is a bad image
            warnings.simplefilter("error", Image.DecompressionBombWarning)
        code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, victim.name, named, "--skip-bad-images", results=results)


def test_skip_bad_images_records_a_bomb_as_failed(tmp_path, capsys):
    write_karpathy(tmp_path)
    victim = _test_images(tmp_path)[0]
    _write_bad(victim, "bomb")
    results = tmp_path / "r"
    code, _, err = run_cli(["run", "coco-caption", "-m", "blip2-tiny-opt", "--data", str(tmp_path),
                            "--results", str(results), "--skip-bad-images", *FAST], capsys)
    assert code == 0, err
    assert "Traceback" not in err and "internal error" not in err
    (run_json,) = results.rglob("run.json")
    record = json.loads(run_json.read_text())
    assert record["counts"]["failed"] == 1 and record["reportable"] is False
    lines = [json.loads(line) for line in (run_json.parent / "predictions.jsonl").read_text().splitlines()]
    (failed,) = [line for line in lines if line["status"] == "failed"]
    assert Path(failed["image"]).name == victim.name and "decompression bomb" in failed["error"]
    assert len(lines) == len(_test_images(tmp_path))


def test_every_convertible_mode_runs_without_failures(tmp_path, capsys):
    """16-bit grey, palette with transparency, LA, RGBA, CMYK and 1-bit images are converted (see to_rgb)."""
    write_karpathy(tmp_path)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    palette = Image.frombytes("P", (32, 24), rng.integers(0, 256, size=(24, 32), dtype=np.uint8).tobytes())
    palette.putpalette(rng.integers(0, 256, size=768, dtype=np.uint8).tolist())
    images = {
        "I;16": (Image.frombytes("I;16", (32, 24), rng.integers(0, 65536, (24, 32), dtype=np.uint16).tobytes()),
                 "PNG", {}),
        "P": (palette, "PNG", {"transparency": 3}),
        "LA": (Image.frombytes("LA", (32, 24), rgb[..., :2].tobytes()), "PNG", {}),
        "RGBA": (Image.frombytes("RGBA", (32, 24), np.dstack([rgb, rgb[..., 0]]).tobytes()), "PNG", {}),
        "CMYK": (Image.frombytes("CMYK", (32, 24), np.dstack([rgb, rgb[..., 1]]).tobytes()), "TIFF", {}),
        "1": (Image.fromarray(rgb[..., 0] > 127), "PNG", {}),
    }
    for path, (mode, (image, format_, extra)) in zip(_test_images(tmp_path), images.items()):
        image.save(path, format=format_, **extra)
        assert Image.open(path).mode == mode
    results = tmp_path / "r"
    code, _, err = run_cli(["run", "coco-caption", "-m", "blip2-tiny-opt", "--data", str(tmp_path),
                            "--results", str(results), *FAST], capsys)
    assert code == 0, err
    (run_json,) = results.rglob("run.json")
    assert json.loads(run_json.read_text())["counts"]["failed"] == 0
