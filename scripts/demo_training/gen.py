"""Tiny Blip2ForConditionalGeneration models (OPT decoder-only / T5 encoder-decoder)."""

from __future__ import annotations

import math
import random
import time

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    GenerationConfig,
    OPTConfig,
    T5Config,
)

from evalkit.demo.shapes import IMAGE_SIZE

from .common import IMAGE_TOKEN, TrainData, sample_tasks

NUM_QUERY_TOKENS = 8


def _vision_qformer_configs(hidden: int = 96, layers: int = 2):
    vision = Blip2VisionConfig(
        hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.02, attention_dropout=0.0,
    )
    qformer = Blip2QFormerConfig(
        vocab_size=32, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=4 * hidden, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=64, cross_attention_frequency=1, encoder_hidden_size=hidden,
    )
    return vision, qformer


def _vocab_size(tokenizer) -> int:
    return int(math.ceil(len(tokenizer) / 8) * 8)


def build_opt_model(tokenizer, seed: int) -> Blip2ForConditionalGeneration:
    torch.manual_seed(seed)
    vision, qformer = _vision_qformer_configs()
    text = OPTConfig(
        vocab_size=_vocab_size(tokenizer), hidden_size=128, word_embed_proj_dim=128, ffn_dim=512,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64, dropout=0.0,
        attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0, do_layer_norm_before=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True, init_std=0.02,
    )
    config = Blip2Config(
        vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
        num_query_tokens=NUM_QUERY_TOKENS, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    return _finish(Blip2ForConditionalGeneration(config), tokenizer, decoder_start=None)


def build_t5_model(tokenizer, seed: int) -> Blip2ForConditionalGeneration:
    torch.manual_seed(seed)
    vision, qformer = _vision_qformer_configs()
    text = T5Config(
        vocab_size=_vocab_size(tokenizer), d_model=128, d_kv=32, d_ff=256, num_layers=2, num_decoder_layers=2,
        num_heads=4, relative_attention_num_buckets=16, relative_attention_max_distance=64, dropout_rate=0.0,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, initializer_factor=1.0,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    config = Blip2Config(
        vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
        num_query_tokens=NUM_QUERY_TOKENS, image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    return _finish(Blip2ForConditionalGeneration(config), tokenizer, decoder_start=tokenizer.pad_token_id)


def _finish(model, tokenizer, decoder_start):
    # Blip2 initialises the query tokens to zeros (they come from a pretrained checkpoint normally);
    # training from scratch needs them distinct, otherwise all queries stay identical.
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 0.02)
    gc = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
              pad_token_id=tokenizer.pad_token_id)
    if decoder_start is not None:
        gc["decoder_start_token_id"] = decoder_start
    model.generation_config = GenerationConfig(**{k: v for k, v in gc.items() if v is not None})
    return model


# ----------------------------------------------------------------------------
# batches (mirror exactly what Blip2Processor produces at evaluation time)


def opt_batch(tokenizer, tasks, nq: int, image_token_id: int):
    """[<image>*nq][<pad>*k]</s> prompt target </s>  (left padded, like the processor)."""
    seqs, labs = [], []
    for prompt, target in tasks:
        p = tokenizer(prompt).input_ids  # BOS + prompt
        t = tokenizer(" " + target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        seqs.append(p + t)
        labs.append([-100] * len(p) + t)
    L = max(map(len, seqs))
    ids = torch.full((len(seqs), nq + L), tokenizer.pad_token_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    lab = torch.full_like(ids, -100)
    ids[:, :nq] = image_token_id
    att[:, :nq] = 1
    for i, (s, l) in enumerate(zip(seqs, labs)):
        ids[i, nq + L - len(s):] = torch.tensor(s)
        att[i, nq + L - len(s):] = 1
        lab[i, nq + L - len(s):] = torch.tensor(l)
    return {"input_ids": ids, "attention_mask": att, "labels": lab}


def t5_batch(tokenizer, tasks, nq: int, image_token_id: int):
    """encoder: [<image>*nq] prompt </s> [<pad>..] ; decoder labels: target </s>."""
    enc = tokenizer([p for p, _ in tasks], padding=True, return_tensors="pt")
    img = torch.full((len(tasks), nq), image_token_id, dtype=torch.long)
    ids = torch.cat([img, enc.input_ids], 1)
    att = torch.cat([torch.ones_like(img), enc.attention_mask], 1)
    dec = tokenizer([t for _, t in tasks], padding=True, return_tensors="pt")
    labels = dec.input_ids.masked_fill(dec.attention_mask == 0, -100)
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


def train_generative(model, tokenizer, data: TrainData, kind: str, steps: int, batch_size: int, lr: float,
                     seed: int, log_every: int = 50, time_budget_s: float | None = None) -> dict:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    nq = model.config.num_query_tokens
    img_tok = model.config.image_token_index
    make = opt_batch if kind == "opt" else t5_batch
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))) * 0.95 + 0.05)
    model.train()
    n = data.pixel_values.shape[0]
    t0 = time.time()
    ema = None
    for step in range(steps):
        idx = [rng.randrange(n) for _ in range(batch_size)]
        batch = make(tokenizer, sample_tasks(rng, data, idx), nq, img_tok)
        out = model(pixel_values=data.pixel_values[idx], **batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema = out.loss.item() if ema is None else 0.95 * ema + 0.05 * out.loss.item()
        if (step + 1) % log_every == 0 or step == 0:
            print(f"  [{kind}] step {step + 1}/{steps} loss {ema:.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - t0:.0f}s", flush=True)
    model.eval()
    return {"steps": steps, "final_loss": ema, "train_s": time.time() - t0}
