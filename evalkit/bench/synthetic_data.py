"""Synthetic COCO-sized JPEGs with VQAv2-format question and annotation files, read by evalkit's real loader.

The pictures are smooth random colour fields with a little grain, saved at JPEG quality 90, so a file is about
COCO's size and costs about as much to decode as a COCO photo. A pool of distinct pictures is written once and
copied under the other names: every file is still opened and decoded on its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

COCO_SIZE = (640, 480)  # the typical COCO val image (width, height)
SUBTYPE = "val2014"
QUESTIONS = ["What color is the car?", "How many people are in the picture?", "Is there a dog?",
             "What is the man holding?", "Where is the cat sitting?", "What sport is this?",
             "Is it raining?", "What is on the table?"]
ANSWERS = ["red", "2", "yes", "umbrella", "couch", "tennis", "no", "pizza"]


def synthetic_picture(seed: int, size: tuple[int, int] = COCO_SIZE) -> Image.Image:
    """A smooth random colour field plus grain, the size of a COCO photo."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (size[1] // 32, size[0] // 32, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize(size, Image.BICUBIC), dtype=np.int16)
    grain = rng.integers(-12, 13, smooth.shape, dtype=np.int16)
    return Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))


def write_pictures(folder: Path, names: list[str], distinct: int) -> None:
    """A JPEG per name in ``folder``: ``distinct`` pictures written, copied under the other names."""
    folder.mkdir(parents=True, exist_ok=True)
    pool = []
    for index, name in enumerate(names[:distinct]):
        synthetic_picture(index).save(folder / name, quality=90)
        pool.append(folder / name)
    for index in range(len(pool), len(names)):
        shutil.copyfile(pool[index % len(pool)], folder / names[index])


def write_vqa_set(directory: Path, num_images: int, questions_per_image: int, distinct: int = 64) -> Path:
    """``num_images`` JPEGs in directory/val2014 and the official VQAv2 val files for them; returns directory."""
    write_pictures(directory / SUBTYPE, [f"COCO_{SUBTYPE}_{i + 1:012d}.jpg" for i in range(num_images)], distinct)
    questions, annotations = [], []
    for image in range(num_images):
        for turn in range(questions_per_image):
            qid = (image + 1) * 1000 + turn
            pick = (image + turn) % len(QUESTIONS)
            questions.append({"image_id": image + 1, "question": QUESTIONS[pick], "question_id": qid})
            answers = [{"answer": ANSWERS[(pick + k // 7) % len(ANSWERS)], "answer_confidence": "yes",
                        "answer_id": k + 1} for k in range(10)]
            annotations.append({"question_id": qid, "image_id": image + 1, "question_type": "what",
                                "answer_type": "other", "multiple_choice_answer": answers[0]["answer"],
                                "answers": answers})
    header = {"data_type": "mscoco", "data_subtype": SUBTYPE, "task_type": "Open-Ended"}
    (directory / f"v2_OpenEnded_mscoco_{SUBTYPE}_questions.json").write_text(json.dumps({**header, "questions": questions}))
    (directory / f"v2_mscoco_{SUBTYPE}_annotations.json").write_text(json.dumps({**header, "annotations": annotations}))
    return directory


CAPTION_WORDS = ("a man woman dog cat red blue small large standing sitting on in near the street table field "
                 "with two people riding holding white black green plate of food bus train tennis ball").split()


def write_caption_set(directory: Path, num_images: int, captions_per_image: int, distinct: int = 64) -> Path:
    """``num_images`` JPEGs and a Karpathy-format split file (split "test") with captions of 8-14 words."""
    write_pictures(directory / "images", [f"{i:012d}.jpg" for i in range(num_images)], distinct)
    rng = np.random.default_rng(0)
    entries = []
    for image in range(num_images):
        sentences = [{"raw": " ".join(rng.choice(CAPTION_WORDS, size=int(rng.integers(8, 15))))}
                     for _ in range(captions_per_image)]
        entries.append({"filepath": "images", "filename": f"{image:012d}.jpg", "split": "test", "cocoid": image,
                        "sentences": sentences})
    path = directory / "dataset_synthetic.json"
    path.write_text(json.dumps({"images": entries}))
    return path
