"""Tiny Blip2ForImageTextRetrieval (Q-Former with ITC + ITM heads)."""

from __future__ import annotations

import dataclasses
import math
import random
import re
import time

import torch
from torch import nn
from transformers import Blip2Config, Blip2ForImageTextRetrieval, OPTConfig

from evalkit.demo.shapes import COLOR_NAMES, SHAPES
from evalkit.data.lavis_text import blip_caption

from .common import IMAGE_TOKEN, TrainData, adamw_cosine
from .gen import NUM_QUERY_TOKENS, vision_embeds, vision_qformer_configs

ITC_TEMP = 0.05  # training-only temperature (the HF model returns raw cosine similarities)


def build_itm_model(tokenizer, seed: int, embed_dim: int = 64) -> Blip2ForImageTextRetrieval:
    torch.manual_seed(seed)
    vision, qformer = vision_qformer_configs(text_input=True)
    qformer.vocab_size = int(math.ceil(len(tokenizer) / 8) * 8)
    qformer.pad_token_id = tokenizer.pad_token_id
    # no language model is instantiated for retrieval; a tiny text config keeps config.json small
    text = OPTConfig(vocab_size=qformer.vocab_size, hidden_size=32, word_embed_proj_dim=32, ffn_dim=64,
                     num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64)
    config = Blip2Config(
        vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
        num_query_tokens=NUM_QUERY_TOKENS, image_text_hidden_size=embed_dim,
        # like the generative models: Blip2Processor(images=..., text=...) prepends num_query_tokens
        # <image> tokens and the model strips them again (see Blip2ForImageTextRetrieval.forward)
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    model = Blip2ForImageTextRetrieval(config)
    with torch.no_grad():
        model.query_tokens.normal_(0.0, 0.02)
    return model


def _image_feats(model, img_embeds):
    q = model.query_tokens.expand(img_embeds.shape[0], -1, -1)
    qo = model.qformer(query_embeds=q, encoder_hidden_states=img_embeds,
                       encoder_attention_mask=torch.ones(img_embeds.shape[:-1], dtype=torch.long)).last_hidden_state
    return nn.functional.normalize(model.vision_projection(qo), dim=-1)  # [B, Q, D]


def _text_feats(model, ids, att):
    to = model.qformer(query_embeds=model.embeddings(input_ids=ids), query_length=0,
                       attention_mask=att).last_hidden_state
    return nn.functional.normalize(model.text_projection(to[:, 0, :]), dim=-1)  # [B, D]


def _itm_logits(model, img_embeds, ids, att):
    """Blip2ForImageTextRetrieval.forward(use_image_text_matching_head=True) on text ids WITHOUT the
    <image> prefix (the forward strips the prefix from input_ids but keeps its all-ones mask part)."""
    q = model.query_tokens.expand(img_embeds.shape[0], -1, -1)
    att = torch.cat([torch.ones(q.shape[:-1], dtype=torch.long), att], dim=1)
    emb = model.embeddings(input_ids=ids, query_embeds=q)
    out = model.qformer(query_embeds=emb, query_length=q.shape[1], attention_mask=att,
                        encoder_hidden_states=img_embeds,
                        encoder_attention_mask=torch.ones(img_embeds.shape[:-1], dtype=torch.long)).last_hidden_state
    return model.itm_head(out[:, : q.shape[1], :]).mean(dim=1)  # [B, 2]


_OBJ = re.compile(r"\b(" + "|".join(COLOR_NAMES) + r") (" + "|".join(SHAPES) + r")\b")


def _key(classes) -> tuple:
    return tuple(sorted(c for c in classes if c))


def _text_key(caption: str) -> tuple:
    """(colour, shape) set named by a caption, as sorted class ids 1 + colour * 3 + shape."""
    return _key(1 + COLOR_NAMES.index(c) * len(SHAPES) + SHAPES.index(sh) for c, sh in _OBJ.findall(caption))


def _swap_binding(rng: random.Random, caption: str) -> str | None:
    """Same words, colours re-assigned to other shapes ("a red circle and a blue square" ->
    "a blue circle and a red square"): the negatives a bag-of-words text encoder confuses."""
    objs = list(_OBJ.finditer(caption))
    colors = [m.group(1) for m in objs]
    if len(set(colors)) < 2:
        return None
    for _ in range(10):
        perm = colors[:]
        rng.shuffle(perm)
        if perm != colors:
            break
    else:
        return None
    out, last = [], 0
    for m, c in zip(objs, perm):
        out.append(caption[last : m.start()] + f"{c} {m.group(2)}")
        last = m.end()
    return "".join(out) + caption[last:]


def _multi_hot(keys: list[tuple]) -> torch.Tensor:
    mh = torch.zeros(len(keys), len(COLOR_NAMES) * len(SHAPES))
    for i, k in enumerate(keys):
        for c in k:
            mh[i, c - 1] = 1.0
    return mh


def pretrain_text(model, text_head, tokenizer, data: TrainData, steps: int, batch_size: int, lr: float,
                  rng: random.Random, log_every: int = 50) -> float:
    """Text-only warm-up of the Q-Former text path: [CLS] must name the caption's (colour, shape)
    set, half of the captions with colours re-bound.  Without it ITC/ITM see a bag of words and
    confuse "a red circle and a blue square" with "a blue circle and a red square"."""
    params = list(model.embeddings.parameters()) + list(model.qformer.parameters()) + list(text_head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    t0, ema = time.time(), None
    for step in range(steps):
        texts = [rng.choice(data.captions[rng.randrange(len(data.captions))]) for _ in range(batch_size)]
        texts = [(_swap_binding(rng, t) or t) if rng.random() < 0.5 else t for t in texts]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=35, return_tensors="pt")
        to = model.qformer(query_embeds=model.embeddings(input_ids=enc.input_ids), query_length=0,
                           attention_mask=enc.attention_mask).last_hidden_state[:, 0, :]
        loss = nn.functional.binary_cross_entropy_with_logits(text_head(to), _multi_hot([_text_key(t) for t in texts]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if (step + 1) % log_every == 0 or step == 0:
            print(f"  [itm-text] step {step + 1}/{steps} loss {ema:.4f} {time.time() - t0:.0f}s", flush=True)
    return ema


def train_itm(model, tokenizer, data: TrainData, steps: int, batch_size: int, lr: float, seed: int,
              log_every: int = 50, hard_ramp: float = 0.5, text_steps: int = 400) -> dict:
    """ITC (max over queries, multi-positive: images with the same (colour, shape) set) + ITM with
    hard negatives; extra negatives: each caption with its colours re-bound to other shapes.
    A throw-away text head makes the text [CLS] name its (colour, shape) set (dense supervision
    for the binding of colours to shapes).  Captions are cleaned as at evaluation time (LAVIS
    BlipCaptionProcessor, the shapes-retrieval protocol), as LAVIS trains BLIP-2."""
    data = dataclasses.replace(data, captions=[[blip_caption(c) for c in caps] for caps in data.captions])
    rng = random.Random(seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for p in model.vision_model.parameters():
        p.requires_grad_(False)
    feats = vision_embeds(model.vision_model, data.pixel_values)
    img_keys = [_key(row) for row in data.cells.tolist()]
    hidden = model.config.qformer_config.hidden_size
    text_head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, len(COLOR_NAMES) * len(SHAPES)))
    text_loss = pretrain_text(model, text_head, tokenizer, data, text_steps, 2 * batch_size, 2 * lr, rng)
    params = [p for p in model.parameters() if p.requires_grad] + list(text_head.parameters())
    opt, sched = adamw_cosine(params, lr, steps, floor=0.05)
    model.train()
    n = feats.shape[0]
    ema_c = ema_m = acc_m = None
    ce = nn.functional.cross_entropy
    bce = nn.functional.binary_cross_entropy_with_logits
    B = batch_size
    for step in range(steps):
        idx = [rng.randrange(n) for _ in range(B)]
        texts = [rng.choice(data.captions[i]) for i in idx]
        extra = []
        for t in texts:
            sw = _swap_binding(rng, t)
            extra.append(sw if sw is not None else rng.choice(data.captions[rng.randrange(n)]))
        all_texts = texts + extra
        t_keys = [_text_key(t) for t in all_texts]
        i_keys = [img_keys[i] for i in idx]
        pos = torch.tensor([[float(ik == tk) for tk in t_keys] for ik in i_keys])  # [B, 2B]
        enc = tokenizer(all_texts, padding=True, truncation=True, max_length=35, return_tensors="pt")
        img = feats[idx]
        imf = _image_feats(model, img)
        to = model.qformer(query_embeds=model.embeddings(input_ids=enc.input_ids), query_length=0,
                           attention_mask=enc.attention_mask).last_hidden_state[:, 0, :]
        txf = nn.functional.normalize(model.text_projection(to), dim=-1)
        loss_txt = bce(text_head(to), _multi_hot(t_keys))
        sim = torch.einsum("iqd,td->itq", imf, txf).max(-1).values  # [B, 2B]
        loss_i2t = ce(sim / ITC_TEMP, pos / pos.sum(1, keepdim=True))
        has_img = pos.sum(0) > 0  # texts with at least one matching image in the batch
        st, pt = sim.t()[has_img], pos.t()[has_img]
        loss_itc = 0.5 * (loss_i2t + ce(st / ITC_TEMP, pt / pt.sum(1, keepdim=True)))
        # ITM negatives: curriculum from random negatives (any other (colour, shape) set) to hard
        # negatives drawn from the ITC similarities; with hard negatives from the start the ITM head
        # stays on the "always negative" plateau.
        p_hard = min(1.0, step / max(1.0, hard_ramp * steps))
        with torch.no_grad():
            neg_w = 1.0 - pos
            if rng.random() < p_hard:
                w_t = torch.softmax(sim / ITC_TEMP, dim=1) * neg_w + 1e-6 * neg_w
                w_i = torch.softmax(sim.t()[:B] / ITC_TEMP, dim=1) * neg_w.t()[:B] + 1e-6 * neg_w.t()[:B]
            else:
                w_t, w_i = neg_w + 1e-9, neg_w.t()[:B] + 1e-9
            neg_txt = torch.multinomial(w_t, 1, generator=gen).squeeze(1)
            neg_img = torch.multinomial(w_i, 1, generator=gen).squeeze(1)
        ids = torch.cat([enc.input_ids[:B], enc.input_ids[neg_txt], enc.input_ids[:B]])
        att = torch.cat([enc.attention_mask[:B], enc.attention_mask[neg_txt], enc.attention_mask[:B]])
        ims = torch.cat([img, img, img[neg_img]])
        labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long()
        logits = _itm_logits(model, ims, ids, att)
        loss_itm = ce(logits, labels)
        loss = loss_itc + loss_itm + loss_txt
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        a = (logits.argmax(-1) == labels).float().mean().item()
        ema_c = loss_itc.item() if ema_c is None else 0.95 * ema_c + 0.05 * loss_itc.item()
        ema_m = loss_itm.item() if ema_m is None else 0.95 * ema_m + 0.05 * loss_itm.item()
        acc_m = a if acc_m is None else 0.95 * acc_m + 0.05 * a
        if (step + 1) % log_every == 0 or step == 0:
            print(f"  [itm] step {step + 1}/{steps} itc {ema_c:.4f} itm {ema_m:.4f} itm-acc {acc_m:.3f} "
                  f"text-aux {loss_txt.item():.4f} {time.time() - t0:.0f}s", flush=True)
    for p in model.vision_model.parameters():
        p.requires_grad_(True)
    model.eval()
    return {"steps": steps, "text_steps": text_steps, "text_warmup_loss": text_loss, "final_itc": ema_c, "final_itm": ema_m, "itm_acc": acc_m, "train_s": time.time() - t0}
