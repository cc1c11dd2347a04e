"""VQAv2 zero-shot (val: 214,354 questions), single-turn and chat-style multi-turn."""

from evalkit.core.protocol import GenerationProtocol
from evalkit.core.task_spec import TaskSpec
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.kinds.vqa import VQA

PROMPTS = {
    "short-answer": "Question: {question} Short answer:",  # LAVIS blip2 VQA eval configs (default)
    "answer": "Question: {question} Answer:",  # the BLIP-2 paper's text for OPT
}
# LAVIS projects/blip2/eval/vqav2_zeroshot_*_eval.yaml: 5 beams, max_len 10, min_len 1, 224 px;
# length penalty -1 for Flan-T5 and 0 (the code default) for OPT; OPT answers end at a newline.
VQA_PROTOCOL = GenerationProtocol(prompt=PROMPTS["short-answer"], num_beams=5, max_new_tokens=10, min_new_tokens=1,
                                  image_size=224, prompt_variant="short-answer")
FAMILY_OVERRIDES = {"opt": {"length_penalty": 0.0, "stop_at_newline": True}, "t5": {"length_penalty": -1.0}}
# Chat: "Question: q1 Answer: a1. Question: q2 Answer:" (the BLIP-2 model docs' chat example),
# oldest turns dropped first so the prompt fits the language model's 512-token context.
CHAT_OVERRIDES = {"prompt": PROMPTS["answer"], "prompt_variant": "answer", "chat": True}

DATA_HELP = ("a folder with v2_OpenEnded_mscoco_<split>_questions.json, v2_mscoco_<split>_annotations.json and "
             "the COCO image folders (val2014/, test2015/), or hf:ID with --column mapping")
COMMON = dict(kind=VQA, load_data=load_vqa_set, default_split="val", data_help=DATA_HELP,
              family_overrides=FAMILY_OVERRIDES, prompt_variants=PROMPTS,
              full_size={"val": 214354, "test-dev": 107394, "test": 447793},
              protocol_source="LAVIS projects/blip2/eval/vqav2_zeroshot_*_eval.yaml; BLIP-2 paper sec. 4.1",
              default_model="blip2-opt-2.7b",
              columns={"image": "image", "question": "question", "question_id": "question_id",
                       "answers": "answers", "question_type": "question_type", "answer_type": "answer_type",
                       "image_id": "image_id"})

TASKS = [
    TaskSpec(name="vqav2", version="1", description="VQAv2 zero-shot, official VQA accuracy",
             protocol=VQA_PROTOCOL, **COMMON),
    TaskSpec(name="vqav2-chat", version="1",
             description="VQAv2 asked as one conversation per image (earlier Q/A in the prompt)",
             protocol=VQA_PROTOCOL.with_overrides(CHAT_OVERRIDES), compare_with="vqav2", **COMMON),
]
