"""Tiny Blip2ForConditionalGeneration models (OPT decoder-only / T5 encoder-decoder)."""

from __future__ import annotations

import math
import random
import time

import torch
from torch import nn
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

from .common import IMAGE_TOKEN, TrainData, adamw_cosine, sample_tasks

NUM_QUERY_TOKENS = 9  # one per cell of the generator's 3x3 layout grid (see vision.py)


def vision_qformer_configs(hidden: int = 96, layers: int = 2, text_input: bool = False):
    vision = Blip2VisionConfig(
        hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=4,
        image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.02, attention_dropout=0.0,
    )
    qformer = Blip2QFormerConfig(
        vocab_size=32, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=4 * hidden, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        max_position_embeddings=64, cross_attention_frequency=1, encoder_hidden_size=hidden,
        use_qformer_text_input=text_input,
    )
    return vision, qformer


def _vocab_size(tokenizer) -> int:
    return int(math.ceil(len(tokenizer) / 8) * 8)


def build_opt_model(tokenizer, seed: int, layers: int = 2) -> Blip2ForConditionalGeneration:
    torch.manual_seed(seed)
    vision, qformer = vision_qformer_configs()
    text = OPTConfig(
        vocab_size=_vocab_size(tokenizer), hidden_size=128, word_embed_proj_dim=128, ffn_dim=512,
        num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=64, dropout=0.0,
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
    vision, qformer = vision_qformer_configs()
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
    model = Blip2ForConditionalGeneration(config)
    with torch.no_grad():  # T5 initialises an untied lm_head with std 1 (initial loss ~50); use d_model**-0.5
        model.language_model.lm_head.weight.normal_(0.0, text.d_model ** -0.5)
    return _finish(model, tokenizer, decoder_start=tokenizer.pad_token_id)


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


@torch.no_grad()
def vision_embeds(vision_model, pixel_values: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    """Frozen image-encoder outputs for the whole training set (computed once)."""
    vision_model.eval()
    return torch.cat([vision_model(pixel_values=pixel_values[i : i + chunk]).last_hidden_state
                      for i in range(0, pixel_values.shape[0], chunk)])


@torch.no_grad()
def query_outputs(model, image_embeds: torch.Tensor, chunk: int = 500) -> torch.Tensor:
    model.qformer.eval()
    return torch.cat([_qformer(model, image_embeds[i : i + chunk]) for i in range(0, image_embeds.shape[0], chunk)])


def _qformer(model, image_embeds):
    q = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    return model.qformer(query_embeds=q, encoder_hidden_states=image_embeds,
                         encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long)).last_hidden_state


def _lm_loss(model, feats: torch.Tensor, batch: dict, frozen_qformer: bool) -> torch.Tensor:
    """Blip2ForConditionalGeneration.forward from precomputed (frozen) image-encoder / Q-Former outputs."""
    qo = feats if frozen_qformer else _qformer(model, feats)
    lm_in = model.language_projection(qo)
    ids = batch["input_ids"]
    emb = model.language_model.get_input_embeddings()(ids)
    mask = (ids == model.config.image_token_index).unsqueeze(-1).expand_as(emb)
    emb = emb.masked_scatter(mask, lm_in.to(emb.dtype))
    labels = batch["labels"]
    if model.config.use_decoder_only_language_model:
        logits = model.language_model(inputs_embeds=emb, attention_mask=batch["attention_mask"]).logits
        logits, labels = logits[:, :-1], labels[:, 1:]
    else:
        logits = model.language_model(inputs_embeds=emb, attention_mask=batch["attention_mask"],
                                      labels=labels).logits
    # mean over each sequence's target tokens, then over the batch: a 1-token VQA answer weighs as
    # much as a 15-token caption (a plain token mean lets captions dominate and VQA learns slowly)
    tok = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                      ignore_index=-100, reduction="none").view(labels.shape)
    n = (labels != -100).sum(1).clamp(min=1)
    return (tok.sum(1) / n).mean()


def train_generative(model, tokenizer, data: TrainData, kind: str, steps: int, batch_size: int, lr: float,
                     seed: int, log_every: int = 50, freeze_qformer: bool = False) -> dict:
    """Train (Q-Former +) projection + language model; the pre-trained image encoder stays frozen."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    nq = model.config.num_query_tokens
    img_tok = model.config.image_token_index
    make = opt_batch if kind == "opt" else t5_batch
    t0 = time.time()
    frozen = list(model.vision_model.parameters())
    if freeze_qformer:
        frozen += list(model.qformer.parameters()) + [model.query_tokens]
    for p in frozen:
        p.requires_grad_(False)
    feats = vision_embeds(model.vision_model, data.pixel_values)
    if freeze_qformer:
        feats = query_outputs(model, feats)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = adamw_cosine(params, lr, steps, floor=0.05)
    model.train()
    n = feats.shape[0]
    ema = None
    for step in range(steps):
        idx = [rng.randrange(n) for _ in range(batch_size)]
        batch = make(tokenizer, sample_tasks(rng, data, idx), nq, img_tok)
        loss = _lm_loss(model, feats[idx], batch, freeze_qformer)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % log_every == 0 or step == 0:
            print(f"  [{kind}] step {step + 1}/{steps} loss {ema:.4f} lr {sched.get_last_lr()[0]:.2e} "
                  f"{time.time() - t0:.0f}s", flush=True)
    for p in frozen:
        p.requires_grad_(True)
    model.eval()
    return {"steps": steps, "final_loss": ema, "train_s": time.time() - t0}
