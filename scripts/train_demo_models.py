#!/usr/bin/env python
"""Train the three tiny BLIP-2 demo models shipped in evalkit/demo/models and score them.

    python scripts/train_demo_models.py            # all three, ~15 min on 2 CPU cores

Same command, same torch and thread count: bit-identical weights (tests/test_demo_training.py).

Pipeline (everything seeded; no downloads):

0. tokenizers trained locally (``tokenizers``) on shapes text (split "train", seed 100):
   byte-level BPE (OPT style), unigram (T5 style), WordPiece (BERT style, Q-Former);
1. training data: split "train", seed 1 (never the bundled test images);
2. stage 0 ("BLIP-2 stage 1" stand-in): image encoder + query tokens + Q-Former trained
   with dense auxiliary targets (content of each cell of the 3x3 layout grid, read from
   pooled patches and from query token k); trained twice: without and with the
   "set of coloured shapes" target (see vision.py: generators vs retrieval);
3. blip2-tiny-opt (3-layer OPT) / blip2-tiny-t5: Blip2ForConditionalGeneration initialised
   from stage 0, image encoder and Q-Former frozen, projection + LM trained on captioning
   ("a photo of" -> caption) and VQA ("Question: {q} Short answer:" -> answer);
4. blip2-tiny-itm: Blip2ForImageTextRetrieval initialised from stage 0 (set target), image
   encoder frozen, text warm-up, then ITC + ITM (hard negatives from ITC);
5. every model is saved (safetensors + Blip2Processor), reloaded from disk and evaluated
   on the bundled test split with evalkit's protocol; scores land in
   ``<model dir>/demo_scores.json`` and are printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
import transformers  # noqa: E402
from transformers import Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval, Blip2Processor  # noqa: E402

from demo_training.common import (  # noqa: E402
    build_bert_tokenizer,
    build_opt_tokenizer,
    build_processor,
    build_t5_tokenizer,
    dir_size,
    make_train_data,
    save_processor,
    set_seed,
    text_corpus,
)
from demo_training.evaluate import CAPTION_GEN, VQA_GEN, evaluate_generative, evaluate_retrieval  # noqa: E402
from demo_training.gen import (  # noqa: E402
    NUM_QUERY_TOKENS,
    build_opt_model,
    build_t5_model,
    train_generative,
    vision_qformer_configs,
)
from demo_training.itm import build_itm_model, train_itm  # noqa: E402
from demo_training.vision import pretrain_stage0  # noqa: E402
from evalkit.demo.shapes import bundled_dir, generate_split  # noqa: E402

MODEL_NAMES = {"opt": "blip2-tiny-opt", "t5": "blip2-tiny-t5", "itm": "blip2-tiny-itm"}
TOKENIZER_SEED, TRAIN_SEED = 100, 1


def load_stage0(model, stage0) -> None:
    own = model.state_dict()
    sd = {k: v for k, v in stage0.state_dict().items() if k in own and own[k].shape == v.shape}
    missing = [k for k in ("query_tokens", "vision_model.embeddings.patch_embedding.weight") if k not in sd]
    if missing:
        raise RuntimeError(f"stage-0 weights do not fit: {missing}")
    model.load_state_dict(sd, strict=False)


def save_model(model, processor, out: Path) -> None:
    """save_pretrained, then store the float weights as fp16 (half the package size; the config keeps
    dtype float32, so the models load as fp32 on CPU and the shipped scores are measured that way)."""
    out.mkdir(parents=True, exist_ok=True)
    for f in out.iterdir():
        if f.is_file():
            f.unlink()
    model.save_pretrained(out, safe_serialization=True)
    weights = out / "model.safetensors"
    tensors = load_file(weights)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}, weights,
              metadata={"format": "pt"})
    save_processor(processor, out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="opt,t5,itm", help="comma list of opt,t5,itm")
    p.add_argument("--out-root", type=Path, default=ROOT / "evalkit" / "demo" / "models")
    p.add_argument("--data-dir", type=Path, default=bundled_dir(), help="test split used for the final scores")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-images", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--stage0-steps", type=int, default=800)
    p.add_argument("--opt-steps", type=int, default=2500)
    p.add_argument("--t5-steps", type=int, default=1500)
    p.add_argument("--itm-steps", type=int, default=1000)
    p.add_argument("--itm-text-steps", type=int, default=400, help="text-only warm-up before ITC + ITM")
    p.add_argument("--opt-layers", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--freeze-qformer", action=argparse.BooleanOptionalAction, default=True,
                   help="generators: keep the stage-0 Q-Former fixed (measured OPT shapes-vqa 97.9 frozen, ~88 trained)")
    p.add_argument("--eval-only", action="store_true", help="only score the models already in --out-root")
    p.add_argument("--no-eval", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    kinds = [k for k in a.models.split(",") if k]
    t_start = time.time()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {a.threads}, "
          f"python {platform.python_version()}", flush=True)

    results: dict[str, dict] = {}
    if not a.eval_only:
        set_seed(a.seed)
        corpus = text_corpus(generate_split("train", 2000, TOKENIZER_SEED))
        toks = {"opt": build_opt_tokenizer(corpus), "t5": build_t5_tokenizer(corpus),
                "itm": build_bert_tokenizer(corpus)}
        procs = {k: build_processor(toks[k], NUM_QUERY_TOKENS) for k in kinds}
        t = time.time()
        data = make_train_data(procs[kinds[0]].image_processor, a.train_images, TRAIN_SEED)
        print(f"training data: {a.train_images} images ({time.time() - t:.1f}s)", flush=True)
        vc, qc = vision_qformer_configs(text_input=True)
        stage0s: dict[bool, tuple] = {}

        def stage0_for(set_target: bool):
            """Stage-0 weights (trained once per variant): the set target for retrieval only."""
            if set_target not in stage0s:
                stage0s[set_target] = pretrain_stage0(vc, qc, NUM_QUERY_TOKENS, data, a.stage0_steps,
                                                      a.batch_size, 3e-3, a.seed, set_target=set_target)
                print(f"stage 0 (set_target={set_target}): {stage0s[set_target][1]}", flush=True)
            return stage0s[set_target]

        for k in kinds:
            out = a.out_root / MODEL_NAMES[k]
            stage0, info0 = stage0_for(set_target=(k == "itm"))
            if k == "itm":
                model = build_itm_model(toks[k], a.seed)
                load_stage0(model, stage0)
                info = train_itm(model, toks[k], data, a.itm_steps, a.batch_size, 1e-3, a.seed,
                                 text_steps=a.itm_text_steps)
            else:
                if k == "opt":
                    model = build_opt_model(toks[k], a.seed, layers=a.opt_layers)
                else:
                    model = build_t5_model(toks[k], a.seed)
                load_stage0(model, stage0)
                steps = a.opt_steps if k == "opt" else a.t5_steps
                info = train_generative(model, toks[k], data, k, steps, a.batch_size, a.lr, a.seed,
                                        freeze_qformer=a.freeze_qformer)
            save_model(model, procs[k], out)
            info["stage0"] = info0
            results[k] = {"training": info}
            print(f"{MODEL_NAMES[k]}: {info}", flush=True)
        train_wall = time.time() - t_start
        print(f"training wall time (incl. data + tokenizers): {train_wall:.0f}s", flush=True)

    if not a.no_eval:
        for k in kinds:
            out = a.out_root / MODEL_NAMES[k]
            t = time.time()
            proc = Blip2Processor.from_pretrained(out)
            if k == "itm":
                model = Blip2ForImageTextRetrieval.from_pretrained(out, dtype=torch.float32).eval()
                scores = evaluate_retrieval(model, proc, a.data_dir)
                settings = {"itc": "max over queries of cosine", "rerank_top_k": 16,
                            "itm": "logits[:, 1] + itc"}
            else:
                model = Blip2ForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
                scores = evaluate_generative(model, proc, k, a.data_dir, batch_size=8)
                settings = {"batch_size": 8, "caption": {"prompt": "a photo of", **CAPTION_GEN},
                            "vqa": {"prompt": "Question: {} Short answer:", **VQA_GEN[k]}}
            scores = {m: round(float(v), 2) for m, v in scores.items()}
            rec = results.setdefault(k, {})
            rec.update({"scores": scores, "eval_settings": settings, "eval_s": round(time.time() - t, 1),
                        "size_bytes": dir_size(out), "transformers": transformers.__version__,
                        "torch": torch.__version__, "seed": a.seed, "threads": a.threads})
            print(f"{MODEL_NAMES[k]} on {a.data_dir.name}: {json.dumps(scores)}", flush=True)
            if "training" in rec:
                (out / "demo_scores.json").write_text(json.dumps(rec, indent=2, sort_keys=True, default=float) + "\n")
    print(f"total wall time: {time.time() - t_start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
