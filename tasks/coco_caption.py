"""COCO captioning on the Karpathy test split (5,000 images), BLIP-2 paper protocol."""

from evalkit.core.protocol import GenerationProtocol
from evalkit.core.task_spec import TaskSpec
from evalkit.data.caption_datasets import load_caption_set
from evalkit.kinds.caption import CAPTION

# BLIP-2 paper / LAVIS caption_coco_*_eval.yaml: prefix prompt "a photo of" (not part of the scored
# caption), 5 beams, 30 new tokens at most, 8 at least; the -coco checkpoints' processors use 364 px.
COCO_CAPTION = GenerationProtocol(prompt="a photo of", num_beams=5, max_new_tokens=30, min_new_tokens=8,
                                  length_penalty=1.0, repetition_penalty=1.0, prompt_variant="paper")
PROMPTS = {"paper": "a photo of", "none": ""}

TASKS = [
    TaskSpec(
        name="coco-caption",
        version="1",
        kind=CAPTION,
        description="COCO captioning, Karpathy test split; BLEU, METEOR, ROUGE-L, CIDEr (pycocoevalcap)",
        protocol=COCO_CAPTION,
        load_data=load_caption_set,
        default_split="test",
        data_help="a folder with dataset_coco.json (Karpathy split) and the COCO image folders, a COCO "
                  "captions_val2014.json / captions_val2017.json (+ --images), a LAVIS caption json, or hf:ID",
        prompt_variants=PROMPTS,
        columns={"image": "image", "captions": "sentences", "id": "cocoid"},
        full_size={"test": 5000},
        protocol_source="BLIP-2 paper sec. 4.2; LAVIS projects/blip2/eval/caption_coco_opt2.7b_eval.yaml",
        default_model="blip2-opt-2.7b-coco",
    ),
]
