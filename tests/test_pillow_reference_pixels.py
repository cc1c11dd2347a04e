"""The LAVIS image pipeline resizes as the Pillow behind the published numbers did, whatever Pillow is installed.

Expected values: sha256 digests of ``Image.resize((s, s), BICUBIC)`` made by Pillow 9.5.0 (and equal under
12.3.0), written by tests/fixtures/pillow_reference/make_reference.py, which imports neither evalkit nor the
Pillow of this environment. Pillow 13 changed the order of its two resize passes for some shapes, which moves
pixels; the guard below shows the installed Pillow's own one-call resize against the same digests.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import PIL
import pytest
from PIL import Image

from conftest import FIXTURES
from evalkit.models.image_preprocessing import lavis_pixel_values, lavis_resize

sys.path.insert(0, str(FIXTURES / "pillow_reference"))
from make_reference import REFERENCE, SIZES, cases, sha256_of  # noqa: E402

EXPECTED = json.loads(REFERENCE.read_text())
CASES = cases()
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def test_the_reference_was_made_by_an_old_pillow():
    assert int(EXPECTED["made_with"]["pillow"].split(".")[0]) <= 12
    assert set(EXPECTED["sha256"]) == {f"{name}@{size}" for name in CASES for size in SIZES}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(CASES))
def test_lavis_resize_equals_old_pillow(name, size):
    assert sha256_of(lavis_resize(CASES[name], size)) == EXPECTED["sha256"][f"{name}@{size}"]


@pytest.mark.parametrize("size", SIZES)
def test_pixel_values_carry_old_pillows_pixels(size):
    """The whole path (lavis_pixel_values), de-normalised to uint8, gives old Pillow's resize."""
    names = [n for n in CASES if n.startswith("coco/")]
    pixels = lavis_pixel_values([CASES[n] for n in names], size, MEAN, STD)
    mean, std = np.array(MEAN, np.float32)[:, None, None], np.array(STD, np.float32)[:, None, None]
    for name, values in zip(names, pixels.numpy()):
        uint8 = np.rint((values * std + mean) * 255).astype(np.uint8).transpose(1, 2, 0)
        assert sha256_of(Image.fromarray(uint8)) == EXPECTED["sha256"][f"{name}@{size}"], name


def test_the_installed_pillows_one_call_resize_against_the_reference():
    """The guard: the digests tell the pass orders apart. Under Pillow 13 (what a base install gets, and this
    suite runs with) the plain one-call resize differs on the tall COCO photos and tall noise; under Pillow <= 12
    it equals the reference everywhere."""
    differing = sorted(key for key, digest in EXPECTED["sha256"].items()
                       if sha256_of(CASES[key.rsplit("@", 1)[0]].resize((int(key.rsplit("@", 1)[1]),) * 2,
                                                                        Image.BICUBIC)) != digest)
    if int(PIL.__version__.split(".")[0]) >= 13:
        assert "coco/000000000802.jpg@224" in differing and "noise 37x700@364" in differing, differing
        assert not any(key.startswith(("noise 900x30", "noise 40x48")) for key in differing), differing
    else:
        assert differing == []
