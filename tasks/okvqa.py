"""OK-VQA zero-shot (val2014: 5,046 questions), official VQA accuracy over its 10 human answers.

Protocols: the same two as vqav2 (``paper``, ``lavis``; evalkit.tasks.vqav2), because LAVIS runs OK-VQA with the
VQAv2 settings: lavis/projects/blip2/eval/okvqa_zeroshot_flant5xl_eval.yaml @0e9a3ec ("Overall Accuracy is:
41.22"; blip2_t5 pretrain_flant5xl, blip_image_eval 224 px, blip_question, max_len 10, min_len 1, num_beams 5,
inference_method generate, prompt "Question: {} Short answer:").

Known difference: that config sets ``apply_lemmatizer: True`` (blip2_t5._lemmatize: spaCy en_core_web_sm turns
each NOUN/VERB of the answer into its lemma before scoring). evalkit does not lemmatise (the spaCy model is
not a PyPI package and cannot be installed offline), so Flan-T5 numbers may sit slightly below LAVIS's.

Default data: lmms-eval's OK-VQA parquet, lmms-lab-encoder/OK-VQA (moved from lmms-lab/OK-VQA; the history
moved with it). Confirmed from the hub pages (search corpus "docs"):
- revision c9f858961f4095a9aeef615057b0822cce967096 = head of main ("Upload dataset", Mar 9 2024; main has 2
  commits: 3fcc603 initial commit, c9f8589), huggingface.co/datasets/lmms-lab/OK-VQA/commits/main;
- files data/val2014-00000-of-00002.parquet (418 MB) and data/val2014-00001-of-00002.parquet (413 MB);
- one config (default), one split val2014 with 5,046 rows (5.05k on the viewer; 5,046 val questions on
  HuggingFaceM4/OK-VQA's card);
- columns question_id (string), image, question, answers (10 strings), question_type, answer_type (the shared
  reference notes; lmms-eval's lmms_eval/tasks/ok_vqa/utils.py reads image, question, answers[i] as strings and
  question_id); no image_id column: every row is its own image key.
"""

from evalkit.core.task_spec import TaskSpec
from evalkit.data.hub_datasets import HubSource
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.kinds.vqa import VQA
from evalkit.tasks.vqav2 import FAMILY_OVERRIDES, LAVIS_OVERRIDES, PROMPTS, VQA_PROTOCOL

HUB = HubSource("lmms-lab-encoder/OK-VQA", "c9f858961f4095a9aeef615057b0822cce967096",
                (("val", "data/val2014-*.parquet"),))

TASKS = [
    TaskSpec(name="okvqa", version="1", kind=VQA, description="OK-VQA zero-shot (val2014), official VQA accuracy",
             protocol=VQA_PROTOCOL, family_overrides=FAMILY_OVERRIDES,
             alternative_protocols={"lavis": LAVIS_OVERRIDES},
             load_data=load_vqa_set, default_split="val", default_data=HUB.to_arg(),
             data_help="the OK-VQA questions/annotations files (OpenEnded_mscoco_val2014_questions.json, "
                       "mscoco_val2014_annotations.json) with the COCO val2014 images, or hf:ID",
             prompt_variants=PROMPTS, full_size={"val": 5046},
             protocol_source="BLIP-2 paper Table 2; LAVIS projects/blip2/eval/okvqa_zeroshot_flant5xl_eval.yaml "
                             "@0e9a3ec (apply_lemmatizer not applied, see tasks/okvqa.py)",
             default_model="blip2-flan-t5-xl",
             columns={"image": "image", "question": "question", "question_id": "question_id", "answers": "answers",
                      "question_type": "question_type", "answer_type": "answer_type", "image_id": "image_id"}),
]
