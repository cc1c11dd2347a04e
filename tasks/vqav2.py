"""VQAv2 zero-shot (val: 214,354 questions), single-turn and chat-style multi-turn.

Two named protocols (docs/PROTOCOL_PARITY.md has the line-by-line sources):
* ``paper`` (default): BLIP-2 paper sec. 4.1: "Question: {} Answer:" for OPT, "Question: {} Short answer:" for
  Flan-T5, 5 beams, length penalty -1 for both. The paper's OPT VQA code was never published; the rest of
  the protocol follows LAVIS's configs (224 px, blip_question, max 10 new tokens, min_length 1).
* ``lavis``: LAVIS's own reproduction, projects/blip2/eval/vqav2_zeroshot_{opt,flant5xl}_eval.yaml with
  blip2_opt.predict_answers @8491f1d (OPT: "Short answer:", length penalty 0, prompt cut to 32 tokens) and
  blip2_t5.predict_answers @baad2d7 (Flan-T5: as the paper). Its OPT-2.7b number is 51.88, not the paper's 53.5.
"""

from evalkit.core.protocol import GenerationProtocol
from evalkit.core.task_spec import TaskSpec
from evalkit.data.hub_datasets import HubSource
from evalkit.data.vqa_datasets import load_vqa_set
from evalkit.kinds.vqa import VQA

PROMPTS = {
    "short-answer": "Question: {question} Short answer:",  # LAVIS configs; the paper's Flan-T5 prompt
    "answer": "Question: {question} Answer:",  # the BLIP-2 paper's OPT prompt
}
# LAVIS vqav2_zeroshot_*_eval.yaml: num_beams 5, max_len 10 (max_new_tokens), min_len 1 (counted as
# transformers 4.26 did: no bound in practice), blip_question, blip_image_eval 224 px.
VQA_PROTOCOL = GenerationProtocol(name="paper", prompt=PROMPTS["short-answer"], prompt_variant="short-answer",
                                  question_preprocess="lavis-blip-question", num_beams=5, max_new_tokens=10,
                                  min_new_tokens=0, min_length=1, length_penalty=-1.0, image_size=224)
# OPT answers end at "\n" (LAVIS blip2_opt: eos_token_id = the newline token).
FAMILY_OVERRIDES = {"opt": {"prompt": PROMPTS["answer"], "prompt_variant": "answer", "stop_at_newline": True}}
LAVIS_OVERRIDES = {"opt": {"prompt": PROMPTS["short-answer"], "prompt_variant": "short-answer", "length_penalty": 0.0,
                           "max_prompt_tokens": 32}}
# Chat: "Question: q1 Answer: a1. Question: q2 Answer:" (the BLIP-2 model docs' chat example),
# oldest turns dropped first so the prompt fits the language model's 512-token context.
# Not a paper protocol: OPT decodes with LAVIS's length penalty 0, Flan-T5 with the paper's -1.
CHAT_OVERRIDES = {"prompt": PROMPTS["answer"], "prompt_variant": "answer", "chat": True}
CHAT_FAMILY_OVERRIDES = {"opt": {"stop_at_newline": True, "length_penalty": 0.0}}

# Default data: lmms-eval's VQAv2 parquet (lmms-eval moved it from lmms-lab/VQAv2 to lmms-lab-encoder/VQAv2; the
# old id redirects and the git history moved with it). Confirmed from the hub pages (search corpus "docs"):
# - columns question_type, multiple_choice_answer, answers [{answer, answer_confidence, answer_id}], image_id,
#   answer_type, question_id, question, image (dataset card / lmms-eval vqav2 task; each row embeds its image);
# - splits validation 214,354 / testdev 107,394 / test 447,793 rows (lmms-eval task files, the dataset card);
# - revision 65fe1e1ffa04f96a7559ed9042da5963a7524c9e: the lmms-lab/VQAv2 commit "Upload dataset (part
#   00007-of-00008)", 137 commits, the newest main commit the index shows (huggingface.co/datasets/lmms-lab/
#   VQAv2/tree/65fe1e1...). Whether main has moved since (e.g. a README edit) is NOT confirmed; the parquet
#   file names data/<split>-NNNNN-of-NNNNN.parquet are confirmed from that history (data/test-00008-of-00143).
HUB = HubSource("lmms-lab-encoder/VQAv2", "65fe1e1ffa04f96a7559ed9042da5963a7524c9e",
                (("val", "data/validation-*.parquet"), ("test-dev", "data/testdev-*.parquet"),
                 ("test", "data/test-*.parquet")))

DATA_HELP = ("a folder with v2_OpenEnded_mscoco_<split>_questions.json, v2_mscoco_<split>_annotations.json and "
             "the COCO image folders (val2014/, test2015/), or hf:ID with --column mapping")
COMMON = dict(kind=VQA, load_data=load_vqa_set, default_split="val", data_help=DATA_HELP, default_data=HUB.to_arg(),
              family_overrides=FAMILY_OVERRIDES, prompt_variants=PROMPTS,
              full_size={"val": 214354, "test-dev": 107394, "test": 447793},
              protocol_source="BLIP-2 paper sec. 4.1; LAVIS projects/blip2/eval/vqav2_zeroshot_*_eval.yaml "
                              "(see docs/PROTOCOL_PARITY.md)",
              default_model="blip2-opt-2.7b",
              columns={"image": "image", "question": "question", "question_id": "question_id",
                       "answers": "answers", "question_type": "question_type", "answer_type": "answer_type",
                       "image_id": "image_id"})

TASKS = [
    TaskSpec(name="vqav2", version="2", description="VQAv2 zero-shot, official VQA accuracy",
             protocol=VQA_PROTOCOL, alternative_protocols={"lavis": LAVIS_OVERRIDES}, **COMMON),
    TaskSpec(name="vqav2-chat", version="2",
             description="VQAv2 asked as one conversation per image (earlier Q/A in the prompt)",
             protocol=VQA_PROTOCOL.with_overrides({**CHAT_OVERRIDES, "name": "chat"}), compare_with="vqav2",
             **{**COMMON, "family_overrides": CHAT_FAMILY_OVERRIDES}),
]
