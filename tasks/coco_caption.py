"""COCO captioning on the Karpathy test split (5,000 images), BLIP-2 paper protocol."""

from evalkit.core.protocol import GenerationProtocol
from evalkit.core.task_spec import TaskSpec
from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.hub_datasets import HubSource
from evalkit.kinds.caption import CAPTION

# BLIP-2 paper sec. 4.2 = LAVIS caption_coco_*_eval.yaml (cd4db98) with blip2_caption_*.yaml: prefix prompt
# "a photo of" (not part of the scored caption), num_beams 5, max_len 30 (max_new_tokens), min_len 8 counted
# as transformers 4.26 did (BOS + prompt + caption for OPT: at least 4 new tokens; T5: the decoder start
# token + caption: at least 7), length and repetition penalty 1; the -coco checkpoints' 364 px.
COCO_CAPTION = GenerationProtocol(name="paper", prompt="a photo of", num_beams=5, max_new_tokens=30,
                                  min_new_tokens=0, min_length=8, length_penalty=1.0, repetition_penalty=1.0,
                                  prompt_variant="paper")
# OPT captions end at "\n" (LAVIS blip2_opt: eos_token_id = the newline token)
FAMILY_OVERRIDES = {"opt": {"stop_at_newline": True}}
PROMPTS = {"paper": "a photo of", "none": ""}

# Default data: the Karpathy 5k test split as nlphuji/mscoco_2014_5k_test_image_text_retrieval, config TEST,
# split test (5,000 rows = images, each with its 5 references in "caption"). The repository holds a loading
# script (refused by current `datasets`), so the files are the auto-converted parquet: revision
# fb42856fbf2ecad4d1382679f0abb33cab9fc952 is the head of refs/convert/parquet ("Delete old duckdb index files",
# Mar 2024; TEST/test/0000.parquet 510 MB + 0001.parquet 311 MB), read from the hub's tree and commit pages
# (search corpus "docs": huggingface.co/datasets/nlphuji/mscoco_2014_5k_test_image_text_retrieval/tree/
# fb42856.../TEST/test). Columns seen in users' code: image, caption (list). NOT confirmed: whether the CSV's
# cocoid / filename columns survive into the parquet; the loader takes cocoid, else the number in filename,
# and stops with a one-line error when neither is there (captions_results.json needs the COCO image ids).
COCO_KARPATHY_HUB = HubSource("nlphuji/mscoco_2014_5k_test_image_text_retrieval",
                              "fb42856fbf2ecad4d1382679f0abb33cab9fc952", (("test", "TEST/test/*.parquet"),),
                              (("captions", "caption"), ("id", "cocoid")))

TASKS = [
    TaskSpec(
        name="coco-caption",
        version="2",
        kind=CAPTION,
        description="COCO captioning, Karpathy test split; BLEU, METEOR, ROUGE-L, CIDEr (pycocoevalcap)",
        protocol=COCO_CAPTION,
        family_overrides=FAMILY_OVERRIDES,
        load_data=load_caption_set,
        default_split="test",
        default_data=COCO_KARPATHY_HUB.to_arg(),
        data_help="a folder with dataset_coco.json (Karpathy split) and the COCO image folders, a COCO "
                  "captions_val2014.json / captions_val2017.json (+ --images), a LAVIS caption json, or hf:ID",
        prompt_variants=PROMPTS,
        columns={"image": "image", "captions": "sentences", "id": "cocoid"},
        full_size={"test": 5000},
        protocol_source="BLIP-2 paper sec. 4.2; LAVIS projects/blip2/eval/caption_coco_opt2.7b_eval.yaml "
                        "(see docs/PROTOCOL_PARITY.md)",
        default_model="blip2-opt-2.7b-coco",
    ),
]
