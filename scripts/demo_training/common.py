"""Shared pieces for training the tiny BLIP-2 demo models: tokenizers, processor, data."""

from __future__ import annotations

import json
import math
import random
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BlipImageProcessor, Blip2Processor, PreTrainedTokenizerFast

from evalkit.demo.shapes import (
    CAPTION_PROMPT, COLOR_NAMES, GRID, IMAGE_SIZE, SHAPES, VQA_PROMPT, ShapesSplit, generate_split,
)

IMAGE_TOKEN = "<image>"


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------
# tokenizer training corpus


def text_corpus(split: ShapesSplit) -> list[str]:
    """All text the models will ever see: prompts, captions, questions, answers."""
    lines = []
    for im in split.images:
        for c in im.captions:
            lines.append(f"{CAPTION_PROMPT} {c}")
    for q in split.questions:
        lines.append(f"{VQA_PROMPT.format(q.question)} {q.answer}")
        lines.extend(q.answers)
    return lines


def _wrap(tok: Tokenizer, **kwargs) -> PreTrainedTokenizerFast:
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    return fast


def build_opt_tokenizer(corpus: list[str], vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """GPT-2/OPT style byte-level BPE: <s>=0 <pad>=1 </s>=2 <unk>=3, BOS '</s>' prepended."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A </s> $B", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    fast = _wrap(tok, bos_token="</s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                 padding_side="left", model_max_length=512, clean_up_tokenization_spaces=False)
    fast.add_tokens([_image_added_token()], special_tokens=True)
    return fast


def build_t5_tokenizer(corpus: list[str], vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """T5 style SentencePiece-unigram: <pad>=0 </s>=1 <unk>=2, EOS appended."""
    # The tokenizers UnigramTrainer degenerates on this tiny, repetitive corpus (it keeps "photo" as
    # single characters), so the unigram model is estimated directly: log relative frequencies of
    # the corpus words (punctuation split off) plus every character as a fallback piece.
    tok = Tokenizer(models.Unigram(_unigram_vocab(corpus, vocab_size), unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    fast = _wrap(tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", padding_side="right",
                 model_max_length=512, clean_up_tokenization_spaces=False)
    fast.add_tokens([_image_added_token()], special_tokens=True)
    return fast


def _unigram_vocab(corpus: list[str], vocab_size: int) -> list[tuple[str, float]]:
    import math
    import re
    from collections import Counter

    words: Counter = Counter()
    chars: Counter = Counter()
    for line in corpus:
        for w in line.split():
            for j, part in enumerate(re.findall(r"[A-Za-z0-9]+|[^A-Za-z0-9]", w)):
                words[("\u2581" if j == 0 else "") + part] += 1
            chars.update(w)
    chars["\u2581"] += sum(chars.values())
    total = sum(words.values()) + sum(chars.values())
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces = [(w, math.log(c / total)) for w, c in sorted(words.items(), key=lambda x: (-x[1], x[0]))
              if len(w) > 1][: max(0, vocab_size - len(chars) - 3)]
    # single characters get a penalty so whole-word pieces always win
    pieces += [(ch, math.log(c / total) - 10.0) for ch, c in sorted(chars.items(), key=lambda x: (-x[1], x[0]))]
    seen, out = set(), []
    for p, sc in specials + pieces:
        if p not in seen:
            seen.add(p)
            out.append((p, sc))
    return out


def build_bert_tokenizer(corpus: list[str], max_len: int = 35) -> PreTrainedTokenizerFast:
    """BERT style WordPiece (lowercased): [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, '[CLS] $A [SEP]'."""
    # Written by hand: tokenizers' WordPieceTrainer breaks frequency ties in hash-map order, so its
    # vocabulary changed from process to process (measured: 4 runs, 4 vocabularies) and so did the
    # retrieval model.  The shapes corpus has 57 distinct words: every corpus word is one piece, in
    # (frequency, word) order, plus single characters (corpus + a-z0-9) and their "##" forms as the
    # fallback for other words.
    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: dict[str, int] = {}
    for line in corpus:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)):
            words[word] = words.get(word, 0) + 1
    chars = sorted({ch for w in words for ch in w} | set(string.ascii_lowercase + string.digits))
    vocab: dict[str, int] = {}
    for piece in (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words, key=lambda w: (-words[w], w))
                  + chars + [f"##{ch}" for ch in chars]):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = _wrap(tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                 mask_token="[MASK]", padding_side="right", truncation_side="right",
                 model_max_length=max_len, clean_up_tokenization_spaces=False)
    fast.add_tokens([_image_added_token()], special_tokens=True)
    return fast


def _image_added_token():
    from tokenizers import AddedToken

    return AddedToken(IMAGE_TOKEN, normalized=False, special=True)


def build_processor(tokenizer: PreTrainedTokenizerFast, num_query_tokens: int | None) -> Blip2Processor:
    image_processor = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    proc = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    return proc


def save_processor(proc: Blip2Processor, out_dir: Path) -> None:
    """save_pretrained + make the files loadable by transformers 4.5x and 5.x alike."""
    # a call with truncation/padding leaves those settings on the backend tokenizer, and they would
    # be saved into tokenizer.json (and come back as default max_length/padding on load)
    proc.tokenizer.backend_tokenizer.no_truncation()
    proc.tokenizer.backend_tokenizer.no_padding()
    proc.save_pretrained(out_dir)
    tc = out_dir / "tokenizer_config.json"
    cfg = json.loads(tc.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["processor_class"] = "Blip2Processor"
    tc.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    pc = out_dir / "processor_config.json"
    if pc.exists():
        pcfg = json.loads(pc.read_text())
        ip = pcfg.get("image_processor")
        if isinstance(ip, dict):
            ip["image_processor_type"] = "BlipImageProcessor"
            # transformers 4.x reads the image processor from preprocessor_config.json
            ip4 = dict(ip)
            ip4["processor_class"] = "Blip2Processor"
            (out_dir / "preprocessor_config.json").write_text(json.dumps(ip4, indent=2, sort_keys=True) + "\n")
        pc.write_text(json.dumps(pcfg, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------
# training data


class _Normalised:
    """uint8 images that index like the float pixel_values tensor the processor would produce."""

    def __init__(self, raw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, rescale: float):
        self.raw, self.mean, self.std, self.rescale = raw, mean, std, rescale
        self.shape = raw.shape

    def __getitem__(self, idx) -> torch.Tensor:
        x = self.raw[idx]
        if x.dim() == 3:
            x = x.unsqueeze(0)
        return (x.float() * self.rescale - self.mean) / self.std


@dataclass
class TrainData:
    pixel_values: _Normalised  # indexes to [B, 3, H, W] float32, exactly what the saved processor produces
    captions: list[list[str]]  # per image
    qa: list[list[tuple[str, str]]]  # per image: (question, canonical answer)
    cells: torch.Tensor  # [N, 9] long: 0 = empty cell, else 1 + colour * 3 + shape (auxiliary vision target)
    extremes: torch.Tensor  # [N, 9, 4] float: object in cell is the unique leftmost/rightmost/topmost/bottommost


def make_train_data(image_processor, n_images: int, seed: int) -> TrainData:
    split = generate_split("train", n_images, seed)
    raw = torch.from_numpy(np.stack([np.asarray(im.image, dtype=np.uint8) for im in split.images]))
    raw = raw.permute(0, 3, 1, 2).contiguous()  # uint8 [N, 3, H, W]; normalised on the fly
    # the on-the-fly normalisation must equal what the saved processor produces
    ref = image_processor([im.image for im in split.images[:16]], return_tensors="pt")["pixel_values"]
    mean = torch.tensor(image_processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std).view(1, 3, 1, 1)
    got = (raw[:16].float() * float(image_processor.rescale_factor) - mean) / std
    if not torch.allclose(got, ref, atol=1e-4):
        raise RuntimeError("on-the-fly normalisation differs from the image processor")
    pv = _Normalised(raw, mean, std, float(image_processor.rescale_factor))
    qa: list[list[tuple[str, str]]] = [[] for _ in split.images]
    for q in split.questions:
        qa[q.image_id - 1].append((q.question, q.answer))
    cells = torch.zeros(len(split.images), GRID * GRID, dtype=torch.long)
    for k, im in enumerate(split.images):
        for o in im.objects:
            cells[k, o.row * GRID + o.col] = 1 + COLOR_NAMES.index(o.color) * len(SHAPES) + SHAPES.index(o.shape)
    extremes = torch.zeros(len(split.images), GRID * GRID, 4)
    for k, im in enumerate(split.images):
        for j, (key, pick) in enumerate(((lambda o: o.col, min), (lambda o: o.col, max),
                                         (lambda o: o.row, min), (lambda o: o.row, max))):
            vals = [key(o) for o in im.objects]
            best = [o for o in im.objects if key(o) == pick(vals)]
            if len(best) == 1 and len(set(vals)) > 1:  # same rule as the "what shape is on the left?" questions
                extremes[k, best[0].row * GRID + best[0].col, j] = 1.0
    return TrainData(pv, [list(im.captions) for im in split.images], qa, cells, extremes)


def sample_tasks(rng: random.Random, data: TrainData, idx: list[int], p_caption: float = 0.4):
    """For each image index: (prompt, target) for either captioning or one VQA question."""
    out = []
    for i in idx:
        if rng.random() < p_caption or not data.qa[i]:
            out.append((CAPTION_PROMPT, rng.choice(data.captions[i])))
        else:
            q, a = rng.choice(data.qa[i])
            out.append((VQA_PROMPT.format(q), a))
    return out


def adamw_cosine(params, lr: float, steps: int, floor: float = 0.0):
    """AdamW with a linear warm-up over 5% of the steps, then a cosine decay to ``floor`` x lr."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warm = max(1, steps // 20)

    def factor(s: int) -> float:
        cosine = min(1.0, (s + 1) / warm) * (0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
        return cosine * (1.0 - floor) + floor if floor else cosine

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
