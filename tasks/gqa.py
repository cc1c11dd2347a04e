"""GQA zero-shot, test-dev balanced (12,578 questions over 398 images), exact match after LAVIS's normalisation.

Protocol: lavis/projects/blip2/eval/gqa_zeroshot_flant5xl_eval.yaml @b345799 ("Overall Accuracy is: 43.98";
blip2_t5 pretrain_flant5xl, gqa type balanced_testdev, blip_image_eval 224 px, blip_question, max_len 10,
min_len 1, num_beams 5, inference_method generate, prompt "Question: {} Short answer:") - the VQAv2 protocol
objects of evalkit.tasks.vqav2 (``paper`` and ``lavis``). Metric: lavis/tasks/vqa.py GQATask._report_metrics
@b345799, in evalkit.kinds.normalized_exact_match.

Default data: lmms-eval's GQA parquet, lmms-lab-encoder/GQA (moved from lmms-lab/GQA). Questions from config
testdev_balanced_instructions (split testdev; columns id, imageId, question, answer, fullAnswer, ...), images
from config testdev_balanced_images (split testdev; columns id, image), joined on imageId == id. Seen on the hub
pages (search corpus "docs"): both configs as folders testdev_balanced_{instructions,images}/testdev-00000-of-
00001.parquet (2.09 MB / 65.6 MB); revision af87823c67247395481256d84ed3d6da4b11ef20 ("Upload dataset", 39
commits) is the newest main commit the index shows and holds both folders; whether main moved since is NOT
confirmed. Row counts 12,578 questions / 398 images: from the issue and the shared reference notes, NOT
re-counted here (the viewer pages were not in the index).
"""

from evalkit.core.task_spec import TaskSpec
from evalkit.data.gqa_datasets import load_gqa_set
from evalkit.data.hub_datasets import HubSource
from evalkit.kinds.normalized_exact_match import NORMALIZED_EXACT_MATCH
from evalkit.tasks.vqav2 import FAMILY_OVERRIDES, LAVIS_OVERRIDES, PROMPTS, VQA_PROTOCOL

HUB = HubSource("lmms-lab-encoder/GQA", "af87823c67247395481256d84ed3d6da4b11ef20",
                (("testdev", "testdev_balanced_instructions/testdev-*.parquet"),
                 ("testdev.images", "testdev_balanced_images/testdev-*.parquet")))

TASKS = [
    TaskSpec(name="gqa", version="1", kind=NORMALIZED_EXACT_MATCH,
             description="GQA test-dev balanced zero-shot, exact match after LAVIS normalisation",
             protocol=VQA_PROTOCOL, family_overrides=FAMILY_OVERRIDES,
             alternative_protocols={"lavis": LAVIS_OVERRIDES},
             load_data=load_gqa_set, default_split="testdev", default_data=HUB.to_arg(),
             data_help="a pinned hub source hf:ORG/NAME@REV?testdev=GLOB&testdev.images=GLOB (questions, images)",
             prompt_variants=PROMPTS, full_size={"testdev": 12578},
             protocol_source="BLIP-2 paper Table 2; LAVIS projects/blip2/eval/gqa_zeroshot_flant5xl_eval.yaml and "
                             "tasks/vqa.py GQATask @b345799",
             default_model="blip2-flan-t5-xl"),
]
