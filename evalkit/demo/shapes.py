"""Synthetic "shapes" vision-language benchmark.

Every image shows 1-3 coloured geometric shapes (circle / square / triangle in
red / green / blue / yellow) on a plain light background.  For each image the
generator produces

* 5 COCO-style reference captions (varied wording, deterministic per seed),
* 3-4 VQAv2-style questions, each with 10 "human" answers that mostly agree but
  carry realistic variation ("two" vs "2", "a circle", "Yes", "red.") which the
  official VQA answer normalisation maps back onto the canonical answer,
* the retrieval pairing (each image with its 5 captions).

Everything is a pure function of ``(split, n_images, seed)``: the same arguments
give byte-identical files.  :func:`write_split` writes the OFFICIAL formats
(COCO caption annotations, Karpathy ``dataset_*.json``, VQAv2 questions +
annotations) so evalkit's ordinary loaders read them with no special path.

The bundled test split (``evalkit/demo/data/shapes``) is::

    python -m evalkit.demo.shapes --split test --n-images 100 --seed 1234 \
        --out evalkit/demo/data/shapes

Layout rules
------------
The image is divided into a 3x3 grid; each shape occupies its own cell (so
shapes never overlap) with a small random jitter/size variation.  Within one
image every shape TYPE appears at most once (so "what color is the circle?" is
always well-posed); colours may repeat.  Shapes are listed in reading order
(column, then row), which defines caption order and the 2-shape relation
("left of" when the columns differ, otherwise "above").

For evaluation splits (anything but ``"train"``) no two images share the same
set of (colour, shape) pairs, so every caption identifies exactly one image and
retrieval is well-posed (at most 124 distinct sets exist).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "SHAPES",
    "IMAGE_SIZE",
    "CAPTION_PROMPT",
    "VQA_PROMPT",
    "BUNDLED_SEED",
    "BUNDLED_N_IMAGES",
    "ShapeObject",
    "ShapesImage",
    "ShapesQuestion",
    "ShapesSplit",
    "generate_split",
    "write_split",
    "bundled_dir",
    "caption_tokens",
]

IMAGE_SIZE = 64
GRID = 3
SHAPES = ("circle", "square", "triangle")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
COLOR_NAMES = tuple(COLORS)
# Prompts evalkit uses at evaluation time (the demo models are trained with these).
CAPTION_PROMPT = "a photo of"
VQA_PROMPT = "Question: {} Short answer:"

BUNDLED_SPLIT = "test"
BUNDLED_SEED = 1234
BUNDLED_N_IMAGES = 100

_CELL_NAMES = {
    (0, 0): "top left", (1, 0): "top", (2, 0): "top right",
    (0, 1): "left", (1, 1): "center", (2, 1): "right",
    (0, 2): "bottom left", (1, 2): "bottom", (2, 2): "bottom right",
}
_CELL_PHRASES = {
    "top left": "in the top left corner", "top": "at the top", "top right": "in the top right corner",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left corner", "bottom": "at the bottom",
    "bottom right": "in the bottom right corner",
}


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    color: str
    col: int  # grid column 0..2 (left -> right)
    row: int  # grid row 0..2 (top -> bottom)
    cx: float
    cy: float
    size: float

    @property
    def name(self) -> str:
        return f"{self.color} {self.shape}"


@dataclass
class ShapesQuestion:
    question_id: int
    image_id: int
    question: str
    question_type: str
    answer_type: str
    answer: str  # canonical answer == multiple_choice_answer
    answers: list[str]  # 10 human answers


@dataclass
class ShapesImage:
    image_id: int
    file_name: str
    objects: list[ShapeObject]
    captions: list[str]
    image: Image.Image = field(repr=False)


@dataclass
class ShapesSplit:
    split: str
    seed: int
    images: list[ShapesImage]
    questions: list[ShapesQuestion]

    @property
    def captions(self) -> dict[int, list[str]]:
        return {im.image_id: list(im.captions) for im in self.images}

    def __len__(self) -> int:
        return len(self.images)


# ----------------------------------------------------------------------------
# layout + rendering


def _sample_objects(rng: np.random.Generator, n_shapes: int) -> list[ShapeObject]:
    cell_px = IMAGE_SIZE / GRID
    cells = rng.choice(GRID * GRID, size=n_shapes, replace=False)
    shapes = rng.choice(len(SHAPES), size=n_shapes, replace=False)
    objs = []
    for cell, s in zip(cells, shapes):
        col, row = int(cell) % GRID, int(cell) // GRID
        color = COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))]
        size = float(rng.uniform(0.62, 0.80) * cell_px)
        slack = (cell_px - size) / 2 - 0.5
        cx = (col + 0.5) * cell_px + float(rng.uniform(-slack, slack))
        cy = (row + 0.5) * cell_px + float(rng.uniform(-slack, slack))
        objs.append(ShapeObject(SHAPES[int(s)], color, col, row, cx, cy, size))
    objs.sort(key=lambda o: (o.col, o.row))  # reading order: left->right, then top->bottom
    return objs


def _jitter_color(rng: np.random.Generator, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    d = rng.integers(-12, 13, size=3)
    return tuple(int(np.clip(c + int(x), 0, 255)) for c, x in zip(rgb, d))


def _render(rng: np.random.Generator, objs: list[ShapeObject]) -> Image.Image:
    shade = int(rng.integers(232, 256))
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (shade, shade, shade))
    draw = ImageDraw.Draw(img)
    for o in objs:
        fill = _jitter_color(rng, COLORS[o.color])
        h = o.size / 2
        if o.shape == "circle":
            draw.ellipse([o.cx - h, o.cy - h, o.cx + h, o.cy + h], fill=fill)
        elif o.shape == "square":
            h2 = h * 0.9
            draw.rectangle([o.cx - h2, o.cy - h2, o.cx + h2, o.cy + h2], fill=fill)
        else:
            draw.polygon([(o.cx, o.cy - h), (o.cx - h, o.cy + h), (o.cx + h, o.cy + h)], fill=fill)
    return img


# ----------------------------------------------------------------------------
# captions


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _np(o: ShapeObject) -> str:
    return f"{_an(o.color)} {o.color} {o.shape}"


def _list_phrase(objs: list[ShapeObject]) -> str:
    items = [_np(o) for o in objs]
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return f"{items[0]}, {items[1]} and {items[2]}"


def _caption_candidates(objs: list[ShapeObject]) -> list[str]:
    n = len(objs)
    lst = _list_phrase(objs)
    if n == 1:
        o = objs[0]
        where = _CELL_PHRASES[_CELL_NAMES[(o.col, o.row)]]
        return [
            f"{_np(o)} {where}",
            f"a single {o.color} {o.shape}",
            f"an image with one {o.color} {o.shape}",
            f"{lst} on a plain background",
            f"one shape: {lst}",
            f"there is {lst} {where}",
        ]
    if n == 2:
        a, b = objs
        if a.col != b.col:
            rel_ab, rel_ba = "to the left of", "to the right of"
        else:
            rel_ab, rel_ba = "above", "below"
        return [
            f"{_np(a)} {rel_ab} {_np(b)}",
            f"{_np(b)} {rel_ba} {_np(a)}",
            f"two shapes: {lst}",
            f"an image with {lst}",
            f"{lst} on a plain background",
            f"there are two shapes, {lst}",
        ]
    distinct_cols = len({o.col for o in objs}) == 3
    return [
        lst,
        f"three shapes: {lst}",
        f"an image with {lst}",
        f"{lst} on a plain background",
        f"there are three shapes, {lst}",
        f"from left to right: {lst}" if distinct_cols else f"three shapes in the picture: {lst}",
    ]


def _captions(rng: np.random.Generator, objs: list[ShapeObject]) -> list[str]:
    cands = _caption_candidates(objs)
    keep = rng.permutation(len(cands))[:5]
    return [cands[int(i)] for i in keep]


def caption_tokens(caption: str) -> list[str]:
    """Karpathy-style tokens: lowercase words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+", caption.lower())


# ----------------------------------------------------------------------------
# questions + human answers

_VARIANTS: dict[str, list[str]] = {
    "yes": ["Yes", "yes.", "yes ", "Yes."],
    "no": ["No", "no.", "no ", "No."],
    "1": ["one", "1.", "One"],
    "2": ["two", "2.", "Two"],
    "3": ["three", "3.", "Three"],
}


def _human_answers(rng: np.random.Generator, canonical: str, wrong: list[str]) -> list[str]:
    """10 answers: mostly the canonical one, a few surface variants (which the
    official VQA normalisation maps onto the canonical answer) and at most one
    genuinely different answer.  At least 6 answers are exactly canonical, so
    the canonical answer is the plurality and scores 1.0 under leave-one-out."""
    variants = _VARIANTS.get(canonical)
    if variants is None:
        variants = [canonical.capitalize(), canonical + "."]
        if canonical in SHAPES:
            variants += [f"{_an(canonical)} {canonical}", f"the {canonical}"]
    answers = [canonical] * 10
    n_var = int(rng.choice([0, 1, 1, 2, 2, 3]))
    slots = rng.permutation(10)
    for i in range(n_var):
        answers[int(slots[i])] = variants[int(rng.integers(len(variants)))]
    if wrong and rng.random() < 0.3:
        answers[int(slots[n_var])] = wrong[int(rng.integers(len(wrong)))]
    return answers


def _questions(rng: np.random.Generator, objs: list[ShapeObject]) -> list[tuple[str, str, str, str, list[str]]]:
    """Returns (question, question_type, answer_type, canonical, wrong_candidates)."""
    n = len(objs)
    out = []
    # 1. counting
    q = "how many shapes are there?" if rng.random() < 0.5 else "how many shapes are in the image?"
    out.append((q, "how many", "number", str(n), [str(k) for k in (1, 2, 3, 4) if k != n]))
    # 2. colour of a shape
    o = objs[int(rng.integers(n))]
    out.append((f"what color is the {o.shape}?", "what color is the", "other", o.color,
                [c for c in COLOR_NAMES if c != o.color]))
    # 3. existence (balanced yes/no)
    present = {(x.color, x.shape) for x in objs}
    present_shapes = {x.shape for x in objs}
    want_yes = bool(rng.random() < 0.5)
    absent_shapes = [s for s in SHAPES if s not in present_shapes]
    if rng.random() < 0.5 and (want_yes or absent_shapes):  # "is there a <shape>?"
        pool = sorted(present_shapes) if want_yes else absent_shapes
        s = pool[int(rng.integers(len(pool)))]
        q = f"is there {_an(s)} {s}?"
    else:  # "is there a <color> <shape>?"
        if want_yes:
            c, s = sorted(present)[int(rng.integers(len(present)))]
        else:
            absent = sorted({(c, s) for c in COLOR_NAMES for s in SHAPES} - present)
            # prefer hard negatives: a shape that is present but in another colour
            hard = [p for p in absent if p[1] in present_shapes]
            pool = hard if hard and rng.random() < 0.7 else absent
            c, s = pool[int(rng.integers(len(pool)))]
        q = f"is there {_an(c)} {c} {s}?"
    ans = "yes" if want_yes else "no"
    out.append((q, "is there a", "yes/no", ans, ["no" if ans == "yes" else "yes"]))
    # 4. position (needs >= 2 shapes and a unique extreme shape)
    if n >= 2:
        options = []
        cols = [x.col for x in objs]
        rows = [x.row for x in objs]
        for word, vals, pick in (("on the left", cols, min), ("on the right", cols, max),
                                 ("at the top", rows, min), ("at the bottom", rows, max)):
            target = pick(vals)
            idx = [i for i, v in enumerate(vals) if v == target]
            others = [v for v in vals if v != target]
            if len(idx) == 1 and others:
                options.append((word, objs[idx[0]]))
        if options:
            word, o = options[int(rng.integers(len(options)))]
            out.append((f"what shape is {word}?", "what", "other", o.shape,
                        [s for s in SHAPES if s != o.shape]))
    return out


# ----------------------------------------------------------------------------
# split generation


def _signature(objs: list[ShapeObject]) -> tuple:
    return tuple(sorted((o.color, o.shape) for o in objs))


def generate_split(split: str, n_images: int, seed: int) -> ShapesSplit:
    """Generate ``n_images`` images with captions and questions, deterministic in ``seed``.

    For every split except ``"train"`` the (colour, shape) sets are unique per
    image (retrieval is well-posed), which caps ``n_images`` at 124.
    """
    if n_images < 1:
        raise ValueError("n_images must be >= 1")
    unique = split != "train"
    max_unique = len(COLOR_NAMES) * len(SHAPES) + 3 * len(COLOR_NAMES) ** 2 + len(COLOR_NAMES) ** 3
    if unique and n_images > max_unique:
        raise ValueError(f"evaluation splits have at most {max_unique} distinct images, asked {n_images}")
    rng = np.random.default_rng(seed)
    seen: set[tuple] = set()
    images: list[ShapesImage] = []
    questions: list[ShapesQuestion] = []
    while len(images) < n_images:
        n_shapes = int(rng.choice([1, 2, 3], p=[0.2, 0.4, 0.4]))
        objs = _sample_objects(rng, n_shapes)
        if unique:
            sig = _signature(objs)
            if sig in seen:
                continue
            seen.add(sig)
        img = _render(rng, objs)
        image_id = len(images) + 1
        caps = _captions(rng, objs)
        for k, (q, qtype, atype, canon, wrong) in enumerate(_questions(rng, objs)):
            questions.append(ShapesQuestion(
                question_id=image_id * 10 + k, image_id=image_id, question=q, question_type=qtype,
                answer_type=atype, answer=canon, answers=_human_answers(rng, canon, wrong)))
        images.append(ShapesImage(image_id=image_id, file_name=f"shapes_{split}_{image_id:06d}.png",
                                  objects=objs, captions=caps, image=img))
    return ShapesSplit(split=split, seed=seed, images=images, questions=questions)


# ----------------------------------------------------------------------------
# writing (official formats)


def _dump(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n", encoding="utf-8")


def write_split(split: ShapesSplit, out_dir: Path) -> None:
    """Write images + COCO captions + Karpathy json + VQAv2 questions/annotations."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    name = split.split
    info = {"description": f"evalkit synthetic shapes benchmark, split {name}, seed {split.seed}",
            "version": "1.0", "year": 2024, "contributor": "evalkit", "url": "",
            "date_created": "2024-01-01"}
    for im in split.images:
        im.image.save(out_dir / "images" / im.file_name, format="PNG", optimize=False, compress_level=9)

    coco_images = [{"id": im.image_id, "file_name": im.file_name, "height": IMAGE_SIZE,
                    "width": IMAGE_SIZE, "license": 0} for im in split.images]
    annotations = [{"id": im.image_id * 10 + k, "image_id": im.image_id, "caption": c}
                   for im in split.images for k, c in enumerate(im.captions)]
    _dump({"info": info, "licenses": [], "type": "captions", "images": coco_images,
           "annotations": annotations}, out_dir / f"captions_{name}.json")

    kimages, sentid = [], 0
    for imgid, im in enumerate(split.images):
        sents, sentids = [], []
        for c in im.captions:
            sents.append({"raw": c, "tokens": caption_tokens(c), "imgid": imgid, "sentid": sentid})
            sentids.append(sentid)
            sentid += 1
        kimages.append({"filepath": "images", "filename": im.file_name, "imgid": imgid,
                        "cocoid": im.image_id, "split": name, "sentids": sentids, "sentences": sents})
    _dump({"dataset": "shapes", "images": kimages}, out_dir / "dataset_shapes.json")

    _dump({"info": info, "task_type": "Open-Ended", "data_type": "shapes", "data_subtype": name,
           "license": {"name": "CC0", "url": ""},
           "questions": [{"image_id": q.image_id, "question": q.question, "question_id": q.question_id}
                         for q in split.questions]},
          out_dir / f"v2_OpenEnded_shapes_{name}_questions.json")
    _dump({"info": info, "data_type": "shapes", "data_subtype": name, "license": {"name": "CC0", "url": ""},
           "annotations": [{"question_id": q.question_id, "image_id": q.image_id,
                            "question_type": q.question_type, "answer_type": q.answer_type,
                            "multiple_choice_answer": q.answer,
                            "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                        for i, a in enumerate(q.answers)]}
                           for q in split.questions]},
          out_dir / f"v2_shapes_{name}_annotations.json")


def bundled_dir() -> Path:
    """Directory of the bundled test split."""
    return Path(__file__).resolve().parent / "data" / "shapes"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", default=BUNDLED_SPLIT)
    p.add_argument("--n-images", type=int, default=BUNDLED_N_IMAGES)
    p.add_argument("--seed", type=int, default=BUNDLED_SEED)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    out = a.out if a.out is not None else bundled_dir()
    s = generate_split(a.split, a.n_images, a.seed)
    write_split(s, out)
    print(f"wrote {len(s.images)} images, {sum(len(i.captions) for i in s.images)} captions, "
          f"{len(s.questions)} questions to {out}")


if __name__ == "__main__":
    main()
