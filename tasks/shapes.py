"""The embedded "shapes" benchmark: evalkit's own synthetic test split, bundled with the package.

Same kinds, protocols, scoring and record code as the COCO / VQAv2 / retrieval tasks, which this file
reuses rather than restates; the data is written in the official formats, so the real loaders read it.
"""

from evalkit.core.task_spec import TaskSpec
from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.demo.bundled import SHAPES_DIR
from evalkit.kinds.caption import CAPTION
from evalkit.kinds.retrieval import RETRIEVAL
from evalkit.kinds.vqa import VQA
from evalkit.tasks.coco_caption import COCO_CAPTION
from evalkit.tasks.coco_caption import FAMILY_OVERRIDES as CAPTION_FAMILY_OVERRIDES
from evalkit.tasks.coco_caption import PROMPTS as CAPTION_PROMPTS
from evalkit.tasks.retrieval import RETRIEVAL_PROTOCOL
from evalkit.tasks.vqav2 import CHAT_FAMILY_OVERRIDES, CHAT_OVERRIDES, FAMILY_OVERRIDES, LAVIS_OVERRIDES, PROMPTS, VQA_PROTOCOL

# The tiny models use their own 64 px processors (image_size None). They were trained on the LAVIS VQA prompt
# ("Question: {} Short answer:") for both families, so the VQA tasks run vqav2's `lavis` protocol; their short
# captions need no LAVIS minimum length.
CAPTION_PROTOCOL = COCO_CAPTION.with_overrides({"min_length": 0, "min_new_tokens": 1, "name": "shapes"})
SHAPES_VQA = VQA_PROTOCOL.with_overrides({"image_size": None, "name": "lavis"})
SHAPES_VQA_FAMILIES = {"opt": {**FAMILY_OVERRIDES["opt"], **LAVIS_OVERRIDES["opt"]}}
# k=16: the shapes test split has 100 images and 500 captions, so the ITC shortlist is cut to 16 (LAVIS: 128
# of 5k/25k) to keep the ITM re-rank as selective as the paper's.
SHAPES_RETRIEVAL = RETRIEVAL_PROTOCOL.with_overrides({"image_size": None, "rerank_k": 16, "name": "shapes"})
SOURCE = "evalkit shapes benchmark (evalkit/demo/shapes.py); prompts and decoding as the BLIP-2 tasks"
VQA_COLUMNS = {"image_pattern": "images/shapes_{subtype}_{image_id:06d}.png"}
COMMON = dict(default_split="test", default_data=str(SHAPES_DIR), protocol_source=SOURCE,
              default_model="blip2-tiny-opt")

TASKS = [
    TaskSpec(name="shapes-caption", version="2", kind=CAPTION,
             description="demo: captioning on the bundled shapes test split (CIDEr etc.)",
             protocol=CAPTION_PROTOCOL, family_overrides=CAPTION_FAMILY_OVERRIDES, load_data=load_caption_set,
             data_help="the shapes folder (dataset_shapes.json + images/)", prompt_variants=CAPTION_PROMPTS, **COMMON),
    TaskSpec(name="shapes-vqa", version="2", kind=VQA,
             description="demo: VQA on the bundled shapes test split (official VQA accuracy)",
             protocol=SHAPES_VQA, family_overrides=SHAPES_VQA_FAMILIES, load_data=load_vqa_set,
             data_help="the shapes folder (VQAv2-format question/annotation files + images/)",
             prompt_variants=PROMPTS, columns=VQA_COLUMNS, **COMMON),
    TaskSpec(name="shapes-chat", version="2", kind=VQA,
             description="demo: shapes questions asked as one conversation per image",
             protocol=SHAPES_VQA.with_overrides({**CHAT_OVERRIDES, "name": "chat"}),
             family_overrides=CHAT_FAMILY_OVERRIDES,
             load_data=load_vqa_set, data_help="the shapes folder", prompt_variants=PROMPTS, columns=VQA_COLUMNS,
             compare_with="shapes-vqa", **COMMON),
    TaskSpec(name="shapes-retrieval", version="1", kind=RETRIEVAL,
             description="demo: image-text retrieval on the bundled shapes test split (R@1/5/10)",
             protocol=SHAPES_RETRIEVAL, load_data=load_caption_set, data_help="the shapes folder",
             **{**COMMON, "default_model": "blip2-tiny-itm"}),
]
