"""Image-text retrieval (BLIP-2 ITC shortlist + ITM re-rank): COCO 5k and Flickr30k 1k Karpathy test."""

from evalkit.core.protocol import RetrievalProtocol
from evalkit.core.task_spec import TaskSpec
from evalkit.data.caption_datasets import load_caption_set
from evalkit.data.hub_datasets import HubSource
from evalkit.kinds.retrieval import RETRIEVAL
from evalkit.tasks.coco_caption import COCO_KARPATHY_HUB  # the COCO Karpathy 5k test source and what is confirmed

# LAVIS projects/blip2/eval/ret_{coco,flickr}_eval.yaml: 364 px, k_test 128, text cut to 35 tokens,
# LAVIS "blip_caption" text cleaning; score = ITM logit (mean over queries) + ITC similarity.
RETRIEVAL_PROTOCOL = RetrievalProtocol(name="paper", image_size=364, rerank_k=128, rerank=True, max_text_tokens=35,
                                       text_preprocess="lavis-blip-caption")
SOURCE = "BLIP-2 paper Table 5; LAVIS blip2.py compute_sim_matrix, tasks/retrieval.py _report_metrics"
DATA_HELP = ("a Karpathy json (dataset_coco.json / dataset_flickr30k.json) with the image folders, a LAVIS "
             "retrieval json ([{image, caption: [..]}]) + --images, or hf:ID")
COMMON = dict(kind=RETRIEVAL, protocol=RETRIEVAL_PROTOCOL, load_data=load_caption_set, default_split="test",
              data_help=DATA_HELP, protocol_source=SOURCE, default_model="blip2-itm-vit-g-coco")

# Flickr30k Karpathy 1k test: nlphuji/flickr_1k_test_image_text_retrieval, config TEST, split test (1,000 images x 5
# captions; columns image, caption, filename per its card). Script dataset: parquet on refs/convert/parquet, whose
# head is commit 667c02f... ("Delete old duckdb index files", Mar 2024) on the hub's commit page; the FULL sha was
# not visible to us, so the revision is the ref itself: REVISION TO CONFIRM. The run records the sha it resolved.
FLICKR_1K_HUB = HubSource("nlphuji/flickr_1k_test_image_text_retrieval", "refs/convert/parquet",
                          (("test", "TEST/test/*.parquet"),), (("captions", "caption"), ("id", "filename")))

TASKS = [
    TaskSpec(name="retrieval-coco", version="1",
             description="COCO 5k test image-text retrieval, R@1/5/10 (BLIP-2 ITC+ITM)",
             columns={"image": "image", "captions": "sentences", "id": "cocoid"}, full_size={"test": 5000},
             default_data=COCO_KARPATHY_HUB.to_arg(), **COMMON),
    # The paper's Flickr30k "zero-shot" number is the COCO-finetuned checkpoint at 364 px: the default here.
    TaskSpec(name="retrieval-flickr30k", version="1",
             description="Flickr30k 1k test retrieval, zero-shot with the COCO-finetuned model",
             columns={"image": "image", "captions": "sentences", "id": "img_id"}, full_size={"test": 1000},
             default_data=FLICKR_1K_HUB.to_arg(), **COMMON),
]
