"""The embedded "shapes" benchmark: evalkit's own synthetic test split, bundled with the package.

Same runner, protocol, scoring and record code as the COCO / VQAv2 / retrieval tasks; the data is
written in the official formats, so the real loaders read it.
"""

from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.demo.bundled import SHAPES_DIR
from evalkit.protocol import Protocol
from evalkit.task_spec import TaskSpec

CAPTION = Protocol(prompt="a photo of", num_beams=5, max_new_tokens=30, min_new_tokens=1, prompt_variant="paper")
VQA_OPT = Protocol(prompt="Question: {question} Short answer:", num_beams=5, max_new_tokens=10, min_new_tokens=1,
                   length_penalty=0.0, stop_at_newline=True, prompt_variant="short-answer")
VQA_T5 = Protocol(prompt="Question: {question} Short answer:", num_beams=5, max_new_tokens=10, min_new_tokens=1,
                  length_penalty=-1.0, prompt_variant="short-answer")
CHAT_OPT = Protocol(**{**VQA_OPT.to_dict(), "prompt": "Question: {question} Answer:", "prompt_variant": "answer",
                       "chat": True})
CHAT_T5 = Protocol(**{**VQA_T5.to_dict(), "prompt": "Question: {question} Answer:", "prompt_variant": "answer",
                      "chat": True})
VQA_PROMPTS = {"short-answer": "Question: {question} Short answer:", "answer": "Question: {question} Answer:"}
# k=16: the shapes test split has 100 images and 500 captions, so the ITC shortlist is cut to 16 (LAVIS: 128
# of 5k/25k) to keep the ITM re-rank as selective as the paper's.
RETRIEVAL = Protocol(rerank_k=16, rerank=True, max_text_tokens=35, text_preprocess="lavis-blip-caption")
SOURCE = "evalkit shapes benchmark (evalkit/demo/shapes.py); prompts and decoding as the BLIP-2 tasks"
VQA_COLUMNS = {"image_pattern": "images/shapes_{subtype}_{image_id:06d}.png"}

TASKS = [
    TaskSpec(name="shapes-caption", version="1", kind="caption",
             description="demo: captioning on the bundled shapes test split (CIDEr etc.)",
             protocols={"opt": CAPTION, "t5": CAPTION}, load_data=load_caption_set, default_split="test",
             data_help="the shapes folder (dataset_shapes.json + images/)", default_data=str(SHAPES_DIR),
             prompt_variants={"paper": "a photo of", "none": ""}, protocol_source=SOURCE,
             default_model="blip2-tiny-opt"),
    TaskSpec(name="shapes-vqa", version="1", kind="vqa",
             description="demo: VQA on the bundled shapes test split (official VQA accuracy)",
             protocols={"opt": VQA_OPT, "t5": VQA_T5}, load_data=load_vqa_set, default_split="test",
             data_help="the shapes folder (VQAv2-format question/annotation files + images/)",
             default_data=str(SHAPES_DIR), prompt_variants=VQA_PROMPTS, columns=VQA_COLUMNS, protocol_source=SOURCE,
             default_model="blip2-tiny-opt"),
    TaskSpec(name="shapes-chat", version="1", kind="vqa",
             description="demo: shapes questions asked as one conversation per image",
             protocols={"opt": CHAT_OPT, "t5": CHAT_T5}, load_data=load_vqa_set, default_split="test",
             data_help="the shapes folder", default_data=str(SHAPES_DIR), prompt_variants=VQA_PROMPTS,
             columns=VQA_COLUMNS, protocol_source=SOURCE, default_model="blip2-tiny-opt",
             compare_with="shapes-vqa"),
    TaskSpec(name="shapes-retrieval", version="1", kind="retrieval",
             description="demo: image-text retrieval on the bundled shapes test split (R@1/5/10)",
             protocols={"itm": RETRIEVAL}, load_data=load_caption_set, default_split="test",
             data_help="the shapes folder", default_data=str(SHAPES_DIR), protocol_source=SOURCE,
             default_model="blip2-tiny-itm"),
]
