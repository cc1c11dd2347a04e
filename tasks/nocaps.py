"""NoCaps validation (4,500 images, 10 references each), zero-shot transfer of the COCO-finetuned checkpoints.

Protocol: lavis/projects/blip2/eval/caption_nocaps_out_domain_flant5xl_eval.yaml (and _flant5xxl) @a3637ae:
blip_image_eval 224 px, blip_caption, num_beams 5, max_len 80, min_len 10, length_penalty 1., inference_method
generate, annotation_file nocaps_val_4500_captions.json. Those configs load pretrain_flant5xl(xxl); the paper's
Table 3 NoCaps numbers are the COCO-finetuned models, so evalkit defaults to blip2-opt-2.7b-coco and keeps the
-coco checkpoints' "a photo of" prompt (stripped before scoring, as for coco-caption). To confirm: whether the
paper ran the 364 px -coco checkpoints at 224 px as these configs do (evalkit follows the config: 224).

Metrics: BLEU, METEOR, ROUGE-L, CIDEr, SPICE (when SPICE can run) overall, and CIDEr / SPICE per domain
(evalkit.kinds.nocaps_caption) when the domains are known: the hub parquet has no domain column, so pass the
official annotation file with ``--column domain_file=nocaps_val_4500_captions.json`` (images[].domain; matched
by image_file_name).

Default data: lmms-eval's NoCaps parquet, lmms-lab-encoder/NoCaps (moved from lmms-lab/NoCaps), split validation.
Confirmed: lmms-eval lmms_eval/tasks/nocaps/nocaps_val.yaml (dataset_path lmms-lab/NoCaps, test_split validation,
doc_to_target annotations_captions) and nocaps/utils.py (reads image, image_id, image_file_name, image_coco_url,
annotations_captions); the hub tree pages (search corpus "docs") show data/validation-0000{0,1,2}-of-00003-<hash>
.parquet (474 / 470 / 476 MB) and data/test-*-of-00007-*.parquet. Revision 4a75c3bddb234495b309ad81a382acf4a288eaad
("Upload data/test-00004-of-00007...", 8 commits) holds all three validation files (its tree page); it is NOT
confirmed to be the head of main (later test uploads may follow) - the validation files are what matter here.
Row counts 4,500 (validation) / 10,600 (test) from the shared reference notes (nocaps paper: 4,500 val images).
"""

from evalkit.core.protocol import GenerationProtocol
from evalkit.core.task_spec import TaskSpec
from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.hub_datasets import HubSource
from evalkit.kinds.nocaps_caption import NOCAPS_CAPTION

NOCAPS_PROTOCOL = GenerationProtocol(name="paper", prompt="a photo of", num_beams=5, max_new_tokens=80,
                                     min_new_tokens=0, min_length=10, length_penalty=1.0, repetition_penalty=1.0,
                                     prompt_variant="paper", image_size=224)
PROMPTS = {"paper": "a photo of", "none": ""}
HUB = HubSource("lmms-lab-encoder/NoCaps", "4a75c3bddb234495b309ad81a382acf4a288eaad",
                (("val", "data/validation-*.parquet"),), (("captions", "annotations_captions"), ("id", "image_id")))

TASKS = [
    TaskSpec(name="nocaps", version="1", kind=NOCAPS_CAPTION,
             description="NoCaps val, zero-shot from COCO fine-tuning; CIDEr/SPICE overall and per domain",
             protocol=NOCAPS_PROTOCOL, family_overrides={"opt": {"stop_at_newline": True}},
             load_data=load_caption_set, default_split="val", default_data=HUB.to_arg(),
             data_help="a nocaps annotation file (nocaps_val_4500_captions.json, COCO format) + --images, or hf:ID",
             prompt_variants=PROMPTS, columns={"image": "image", "captions": "annotations_captions", "id": "image_id"},
             full_size={"val": 4500},
             protocol_source="BLIP-2 paper Table 3; LAVIS projects/blip2/eval/"
                             "caption_nocaps_out_domain_flant5xl_eval.yaml @a3637ae",
             default_model="blip2-opt-2.7b-coco"),
]
