"""Small built-in evaluator for the demo models on the bundled shapes test split.

Uses the official file formats and the evaluation protocol of evalkit (processor with
padding=True, beam search with the documented settings, batch size 8).  Metrics are a
quick approximation of the official ones: CIDEr-D / BLEU-4 from pycocoevalcap on
lowercased, punctuation-stripped whitespace tokens; VQA accuracy with the official
min(1, #matches/3) leave-one-out average and answer normalisation; R@1/R@5 for retrieval.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from PIL import Image

from evalkit.demo.shapes import CAPTION_PROMPT, VQA_PROMPT
from evalkit.data.lavis_text import blip_caption

CAPTION_GEN = dict(num_beams=5, max_new_tokens=30, min_new_tokens=1)
VQA_GEN = {"opt": dict(num_beams=5, max_new_tokens=10, min_new_tokens=1, length_penalty=0.0),
           "t5": dict(num_beams=5, max_new_tokens=10, min_new_tokens=1, length_penalty=-1.0)}


def load_bundled(data_dir: Path):
    caps = json.loads((data_dir / "captions_test.json").read_text())
    images = {im["id"]: im["file_name"] for im in caps["images"]}
    refs: dict[int, list[str]] = {i: [] for i in images}
    for a in caps["annotations"]:
        refs[a["image_id"]].append(a["caption"])
    qs = json.loads((data_dir / "v2_OpenEnded_shapes_test_questions.json").read_text())["questions"]
    anns = {a["question_id"]: a for a in
            json.loads((data_dir / "v2_shapes_test_annotations.json").read_text())["annotations"]}
    pil = {i: Image.open(data_dir / "images" / f).convert("RGB") for i, f in images.items()}
    return pil, refs, qs, anns


def _chunks(xs, n):
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


@torch.no_grad()
def generate(model, processor, images, prompts, kind: str, gen_kwargs: dict, batch_size: int = 8) -> list[str]:
    outs: list[str] = []
    for ims, ps in zip(_chunks(images, batch_size), _chunks(prompts, batch_size)):
        inputs = processor(images=ims, text=ps, return_tensors="pt", padding=True)
        out = model.generate(**inputs, **gen_kwargs)
        if kind == "opt":
            out = out[:, inputs["input_ids"].shape[1]:]
        outs.extend(s.strip() for s in processor.batch_decode(out, skip_special_tokens=True))
    return outs


def _cap_norm(s: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", s.lower()))


def caption_scores(preds: dict[int, str], refs: dict[int, list[str]]) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    gts = {i: [_cap_norm(r) for r in refs[i]] for i in preds}
    res = {i: [_cap_norm(preds[i])] for i in preds}
    cider, _ = Cider().compute_score(gts, res)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    exact = sum(res[i][0] in gts[i] for i in preds) / len(preds)
    return {"CIDEr": 100 * cider, "BLEU-4": 100 * bleu[3], "exact_ref_match": 100 * exact}


# --- official VQA answer normalisation (condensed from the VQA evaluation code) ---
_CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't"}
_MANUAL = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
           "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PUNCT = [";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]


def _process_punctuation(t: str) -> str:
    out = t
    for p in _PUNCT:
        if (p + " " in t or " " + p in t) or (re.search(_COMMA_STRIP, t) is not None):
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, re.UNICODE)


def _process_digit_article(t: str) -> str:
    words = []
    for w in t.lower().split():
        w = _MANUAL.get(w, w)
        if w not in _ARTICLES:
            words.append(_CONTRACTIONS.get(w, w))
    return " ".join(words)


def vqa_accuracy(pred: str, answers: list[str]) -> float:
    gts = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    res = pred.replace("\n", " ").replace("\t", " ").strip()
    if len(set(gts)) > 1:
        gts = [_process_digit_article(_process_punctuation(a)) for a in gts]
        res = _process_digit_article(_process_punctuation(res))
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1:]
        accs.append(min(1.0, sum(o == res for o in others) / 3.0))
    return sum(accs) / len(accs)


def evaluate_generative(model, processor, kind: str, data_dir: Path, batch_size: int = 8,
                        verbose: bool = True) -> dict:
    pil, refs, qs, anns = load_bundled(data_dir)
    ids = sorted(pil)
    caps = generate(model, processor, [pil[i] for i in ids], [CAPTION_PROMPT] * len(ids), kind, CAPTION_GEN,
                    batch_size)
    preds = dict(zip(ids, caps))
    scores = caption_scores(preds, refs)
    answers = generate(model, processor, [pil[q["image_id"]] for q in qs],
                       [VQA_PROMPT.format(q["question"]) for q in qs], kind, VQA_GEN[kind], batch_size)
    per_type: dict[str, list[float]] = {}
    accs = []
    for q, a in zip(qs, answers):
        ann = anns[q["question_id"]]
        acc = vqa_accuracy(a, [x["answer"] for x in ann["answers"]])
        accs.append(acc)
        per_type.setdefault(ann["answer_type"], []).append(acc)
        per_type.setdefault("q:" + ann["question_type"], []).append(acc)
    scores["VQA_acc"] = 100 * sum(accs) / len(accs)
    for t, v in sorted(per_type.items()):
        scores[f"VQA_{t}"] = 100 * sum(v) / len(v)
    if verbose:
        for i in ids[:3]:
            print(f"    caption[{i}]: {preds[i]!r}   ref: {refs[i][0]!r}")
        for q, a in list(zip(qs, answers))[:4]:
            print(f"    Q: {q['question']!r} -> {a!r} (gt {anns[q['question_id']]['multiple_choice_answer']!r})")
    return scores


# ----------------------------------------------------------------------------
# retrieval


@torch.no_grad()
def retrieval_features(model, processor, images, texts, batch_size: int = 32):
    img_feats, img_embeds = [], []
    for ims in _chunks(images, batch_size):
        pv = processor.image_processor(ims, return_tensors="pt")["pixel_values"]
        emb = model.vision_model(pixel_values=pv).last_hidden_state
        q = model.query_tokens.expand(emb.shape[0], -1, -1)
        qo = model.qformer(query_embeds=q, encoder_hidden_states=emb,
                           encoder_attention_mask=torch.ones(emb.shape[:-1], dtype=torch.long)).last_hidden_state
        img_feats.append(torch.nn.functional.normalize(model.vision_projection(qo), dim=-1))
        img_embeds.append(pv)
    txt_feats, toks = [], []
    for ts in _chunks(texts, batch_size):
        enc = processor.tokenizer(ts, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        te = model.embeddings(input_ids=enc.input_ids)
        to = model.qformer(query_embeds=te, query_length=0, attention_mask=enc.attention_mask).last_hidden_state
        txt_feats.append(torch.nn.functional.normalize(model.text_projection(to[:, 0, :]), dim=-1))
        toks.append(enc)
    ids = torch.cat([t.input_ids for t in toks])
    att = torch.cat([t.attention_mask for t in toks])
    return torch.cat(img_feats), torch.cat(img_embeds), torch.cat(txt_feats), ids, att


@torch.no_grad()
def itm_scores(model, pixel_values, input_ids, attention_mask) -> torch.Tensor:
    """ITM logit of 'match' from model(..., use_image_text_matching_head=True); input_ids are plain
    text ids, the <image> prefix that Blip2Processor(images=, text=) adds is prepended here."""
    if model.config.image_token_index is not None:
        n, q = input_ids.shape[0], model.config.num_query_tokens
        input_ids = torch.cat([torch.full((n, q), model.config.image_token_index, dtype=input_ids.dtype), input_ids], 1)
        attention_mask = torch.cat([torch.ones(n, q, dtype=attention_mask.dtype), attention_mask], 1)
    out = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                use_image_text_matching_head=True)
    return out.logits_per_image[:, 1]


@torch.no_grad()
def evaluate_retrieval(model, processor, data_dir: Path, k: int = 16, batch_size: int = 64) -> dict:
    pil, refs, _, _ = load_bundled(data_dir)
    ids = sorted(pil)
    texts, txt2img = [], []
    for j, i in enumerate(ids):
        for r in refs[i]:
            texts.append(blip_caption(r))  # the shapes-retrieval protocol's text cleaning
            txt2img.append(j)
    txt2img_t = torch.tensor(txt2img)
    imf, pv, txf, tid, tatt = retrieval_features(model, processor, [pil[i] for i in ids], texts)
    sim = torch.einsum("iqd,td->itq", imf, txf).max(-1).values  # [n_img, n_txt] ITC
    res = {}
    res.update(_recall("itc", sim, txt2img_t))
    # re-rank top-k with ITM (+ ITC)
    s_i2t = torch.full_like(sim, -1e4)
    for i in range(sim.shape[0]):
        top = sim[i].topk(k).indices
        sc = []
        for chunk in _chunks(top.tolist(), batch_size):
            sc.append(itm_scores(model, pv[i : i + 1].expand(len(chunk), -1, -1, -1), tid[chunk], tatt[chunk]))
        s_i2t[i, top] = torch.cat(sc) + sim[i, top]
    s_t2i = torch.full_like(sim, -1e4)
    for t in range(sim.shape[1]):
        top = sim[:, t].topk(k).indices
        sc = itm_scores(model, pv[top], tid[t : t + 1].expand(len(top), -1), tatt[t : t + 1].expand(len(top), -1))
        s_t2i[top, t] = sc + sim[top, t]
    r1 = _recall("itm", s_i2t, txt2img_t, only="i2t")
    r1.update(_recall("itm", s_t2i, txt2img_t, only="t2i"))
    res.update(r1)
    return res


def _recall(prefix, sim, txt2img, only=None) -> dict:
    out = {}
    n_img = sim.shape[0]
    if only in (None, "i2t"):
        # image -> text (evalkit's txt_r*): a hit if any of the top-k texts belongs to the image
        for k in (1, 5):
            top = sim.topk(k, dim=1).indices
            hit = (txt2img[top] == torch.arange(n_img)[:, None]).any(1).float().mean()
            out[f"{prefix}_i2t_R@{k}"] = 100 * hit.item()
    if only in (None, "t2i"):  # text -> image (evalkit's img_r*)
        for k in (1, 5):
            top = sim.t().topk(k, dim=1).indices
            hit = (top == txt2img[:, None]).any(1).float().mean()
            out[f"{prefix}_t2i_R@{k}"] = 100 * hit.item()
    return out
