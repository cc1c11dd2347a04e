"""Real-size BLIP-2 architectures with random weights, from configs shipped with evalkit (nothing downloaded).

The sizes are the hub checkpoints' (see configs/*.json). The tokenizer is a synthetic word-level one with the
real vocabulary size and special-token ids, so embedding and LM-head shapes are the real ones; prompts come out
about one token per word, a little shorter than the real BPE.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch

from evalkit.core.errors import EvalkitError, closest_names
from evalkit.models.catalog import ModelEntry
from evalkit.models.loading import LoadedCheckpoint, pick_device, pick_dtype, set_component_precision

CONFIGS_DIR = Path(__file__).parent / "configs"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PROMPT_WORDS = ("question : short answer a photo of what is the how many are there in on color who where why "
                "which this that picture image ? . , !").split()


def shipped_configs() -> list[str]:
    """Names of the architectures ``--random-weights`` can build."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.json"))


def read_config(name: str) -> dict:
    """The shipped architecture ``name`` (e.g. ``blip2-opt-2.7b``): {name, family, source, config}."""
    path = CONFIGS_DIR / f"{name}.json"
    if not path.is_file():
        raise EvalkitError(f"no shipped architecture {name!r} for --random-weights"
                           f"{closest_names(name, shipped_configs())}; shipped: {', '.join(shipped_configs())}")
    return json.loads(path.read_text())


def synthetic_tokenizer(family: str, vocab_size: int, image_token_id: int | None):
    """A word-level tokenizer over the real vocabulary size with the family's special-token ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if family == "itm":
        return _bert_like_tokenizer(vocab_size)
    if family == "opt":  # OPT: pad 1, </s> 2 (prepended as BOS), unk 3
        specials = {"<pad>": 1, "</s>": 2, "<unk>": 3}
    else:  # T5: pad 0, </s> 1 (appended), unk 2
        specials = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    specials["<image>"] = image_token_id
    vocab = {f"w{i}": i for i in range(vocab_size)}
    for word, index in zip(PROMPT_WORDS, range(100, 100 + len(PROMPT_WORDS))):
        vocab[word] = index
    for token, index in specials.items():
        vocab[token] = index
    vocab = {token: index for token, index in vocab.items()
             if token in specials or token in PROMPT_WORDS or vocab.get(f"w{index}") == index
             and index not in specials.values() and not 100 <= index < 100 + len(PROMPT_WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    eos = specials["</s>"]
    single = "</s> $A" if family == "opt" else "$A </s>"
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("</s>", eos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   bos_token="</s>" if family == "opt" else None)
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def _bert_like_tokenizer(vocab_size: int):
    """The ITM Q-Former's tokenizer shape: BERT's special ids ([PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102), words."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    vocab = {f"w{i}": i for i in range(vocab_size) if i not in specials.values()} | specials
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 101), ("[SEP]", 102)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def _untie_t5_head(model: torch.nn.Module, family: str) -> None:
    """Flan-T5 checkpoints hold an LM head apart from the input embeddings; transformers >= 5 builds T5 tied and
    unties only when the loaded weights differ, so a random model gets its own head here (the real size)."""
    if family != "t5":
        return
    lm = model.language_model
    if lm.lm_head.weight is lm.shared.weight:
        lm.lm_head.weight = torch.nn.Parameter(lm.shared.weight.detach().clone())


def random_checkpoint(name: str, device: str = "auto", dtype: str | None = None, image_size: int | None = None,
                      seed: int = 0) -> LoadedCheckpoint:
    """The shipped architecture ``name`` with random weights, in evalkit's per-component precision."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2ForImageTextRetrieval
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    spec = read_config(name)
    family = spec["family"]
    config = Blip2Config(**spec["config"])
    image_token_id = spec["config"].get("image_token_index")  # the generation models' only
    if image_token_id is not None:
        config.image_token_id = int(image_token_id)
    model_class = Blip2ForImageTextRetrieval if family == "itm" else Blip2ForConditionalGeneration
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(family, torch_device, dtype)
    torch.manual_seed(seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # build in the load dtype: a 12B model never exists in fp32
    try:
        with torch.device(torch_device):
            model = model_class(config)
            _untie_t5_head(model, family)
    finally:
        torch.set_default_dtype(default)
    set_component_precision(model, family, torch_device, dtype)
    model.to(torch_device).eval()
    vocab = config.qformer_config.vocab_size if family == "itm" else config.text_config.vocab_size
    tokenizer = synthetic_tokenizer(family, int(vocab), image_token_id)
    size = int(config.vision_config.image_size)
    processor = SimpleNamespace(tokenizer=tokenizer, image_processor=SimpleNamespace(
        size={"height": size, "width": size}, image_mean=CLIP_MEAN, image_std=CLIP_STD))
    entry = ModelEntry(name=f"{name} (random weights)", source=f"evalkit/bench/configs/{name}.json", family=family,
                       image_size=image_size or size, description=spec.get("source", ""))
    return LoadedCheckpoint(model=model, processor=processor, entry=entry, device=torch_device, dtype=torch_dtype,
                            revision="random-weights", weights_sha256="random-weights",
                            num_parameters=sum(p.numel() for p in model.parameters()), checkpoint_dir="")
