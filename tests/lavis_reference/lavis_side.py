"""Runs LAVIS 1.0.2's own BLIP-2 model code on the bundled tiny models; executed by the side environment's
python (scripts/lavis_env.sh), never imported by evalkit or by the main test process.

    .lavis-env/bin/python tests/lavis_reference/lavis_side.py JOB_DIR

JOB_DIR/job.json (written by tests/test_lavis_reference.py) names, per family, the LAVIS state dict made by
`evalkit convert to-lavis`, the tiny model's config and tokenizer, the pixel tensors and the prompts and
decoding settings; this script writes JOB_DIR/lavis_outputs.pt.

Only what cannot run offline and does no math is replaced (STUBS below, printed and saved with the outputs);
LAVIS's classes are built at the tiny models' sizes (SIZES). Every output comes from LAVIS's own modules and
methods: `Blip2OPT.generate`, `Blip2T5.generate` / `predict_answers`, `compute_sim_matrix` (ITC + ITM re-rank),
and for the intermediate tensors the same module calls those methods make, in their order.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import sys
import types
from functools import partial
from pathlib import Path

import torch

STUBS = [
    "lavis/__init__.py, lavis/models/__init__.py: not executed (bare packages); they only import every model, "
    "dataset, processor and task to fill LAVIS's registry, and pull decord, spacy, webdataset, ...",
    "timm/__init__.py, timm/models/__init__.py: not executed (bare packages); they register every timm model and "
    "import timm.data (torchvision transforms); eva_vit.py uses only timm.models.layers (drop_path, to_2tuple, "
    "trunc_normal_) and timm.models.registry",
    "torchvision.datasets.utils (check_integrity, download_file_from_google_drive, extract_archive): raise if "
    "called; lavis/common/utils.py imports these download helpers and no model code calls them (torchvision "
    "is not installed in the side environment: no CPU build of it matches torch 2.13 offline)",
    "fairscale.nn.checkpoint.checkpoint_wrapper: identity (gradient checkpointing for clip_vit, which is not built)",
    "BertTokenizer.from_pretrained('bert-base-uncased') -> BertTokenizer over the tiny ITM model's WordPiece vocab "
    "(LAVIS's init_tokenizer then adds [DEC] itself)",
    "BertConfig.from_pretrained('bert-base-uncased') -> BertConfig with the tiny Q-Former's sizes (init_Qformer "
    "then sets encoder_width, add_cross_attention, cross_attention_freq, query_length itself)",
    "BertLMHeadModel.from_pretrained('bert-base-uncased', config) -> BertLMHeadModel(config): no download; "
    "weights come from the converted state dict",
    "create_eva_vit_g (lavis.models.blip2_models.blip2) -> lavis.models.eva_vit.VisionTransformer at the tiny "
    "sizes with create_eva_vit_g's own settings (use_mean_pooling=False, qkv_bias=True, LayerNorm eps 1e-6), "
    "without downloading eva_vit_g.pth and without convert_weights_to_fp16",
    "AutoTokenizer.from_pretrained(opt_model, use_fast=False) -> the tiny OPT tokenizer.json "
    "(PreTrainedTokenizerFast); its BPE merges rewritten from [a, b] pairs to the 'a b' strings tokenizers 0.13 "
    "reads (the same merges, in the older file format); T5's Metaspace prepend_scheme 'always' written as "
    "add_prefix_space true (the same rule, older format)",
    "OPTForCausalLM.from_pretrained(opt_model, torch_dtype=float16) -> LAVIS's modeling_opt.OPTForCausalLM"
    "(tiny text_config) in float32 (the harness compares fp32)",
    "T5TokenizerFast.from_pretrained(t5_model) -> T5TokenizerFast over the tiny T5 tokenizer.json (extra_ids=0)",
    "T5Config.from_pretrained(t5_model) -> T5Config(tiny text_config); LAVIS then sets dense_act_fn='gelu' itself",
    "T5ForConditionalGeneration.from_pretrained(t5_model, config) -> LAVIS's modeling_t5 class(config); "
    "LAVIS's bfloat16 cast of the T5 weights is undone with .float() before loading (fp32 comparison)",
]
SIZES = [
    "init_Qformer's cross_attention_freq default 2 -> the tiny models' 1 (Blip2OPT/Blip2T5 do not pass it; "
    "Blip2Qformer takes it as an argument)",
    "Blip2Qformer's resize_token_embeddings(len(tokenizer)) -> the tiny ITM's 136 rows before loading",
    "T5Config.tie_word_embeddings <- the tiny T5's scale_decoder_outputs (false): transformers 4.26 rescales the "
    "decoder output exactly when embeddings are tied; the LM head is loaded as its own (equal) weight",
    "num_query_token, img_size, embed_dim, max_txt_len from the tiny configs",
]


def main(job_dir: Path) -> None:
    job = json.loads((job_dir / "job.json").read_text())
    lavis_root = Path(importlib.util.find_spec("lavis").submodule_search_locations[0])
    _bare_packages(lavis_root)
    torch.manual_seed(0)
    outputs = {"stubs": STUBS, "sizes": SIZES, "versions": _versions()}
    limit = job.get("generation_limit", 0)  # 0: every sample; else the first N images and questions
    for family, spec in job["families"].items():
        if limit:
            spec["vqa"] = spec.get("vqa", [])[:limit]
            spec["caption_images"] = limit
        print(f"lavis_side: {family}", flush=True)
        outputs[family] = RUNNERS[family](spec)
    torch.save(outputs, job_dir / "lavis_outputs.pt")


def _bare_packages(root: Path) -> None:
    """`lavis`, `lavis.models`, `timm`, `timm.models` as packages whose __init__ is not run (registry filling
    only), and torchvision's download helpers, which lavis/common/utils.py imports and nothing here calls."""
    timm_root = Path(importlib.util.find_spec("timm").submodule_search_locations[0])
    for name, path in (("lavis", root), ("lavis.models", root / "models"), ("timm", timm_root),
                       ("timm.models", timm_root / "models")):
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__spec__.submodule_search_locations = [str(path)]
        sys.modules[name] = module
    sys.modules["timm"].__version__ = (timm_root / "version.py").read_text().split("'")[1]

    def no_download(*args, **kwargs):
        raise RuntimeError("the LAVIS parity harness runs offline: no downloads")

    for name in ("torchvision", "torchvision.datasets", "torchvision.datasets.utils"):
        module = types.ModuleType(name)
        module.__path__ = []
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        sys.modules[name] = module
    for helper in ("check_integrity", "download_file_from_google_drive", "extract_archive", "download_url"):
        setattr(sys.modules["torchvision.datasets.utils"], helper, no_download)
    from lavis.models.base_model import BaseModel  # the registry's register_model checks subclasses of it

    sys.modules["lavis.models"].BaseModel = BaseModel
    if importlib.util.find_spec("fairscale") is None:
        for name in ("fairscale", "fairscale.nn", "fairscale.nn.checkpoint",
                     "fairscale.nn.checkpoint.checkpoint_activations"):
            module = types.ModuleType(name)
            module.__path__ = []
            sys.modules[name] = module
        sys.modules["fairscale.nn.checkpoint.checkpoint_activations"].checkpoint_wrapper = lambda module, **_: module


def _versions() -> dict:
    import transformers
    from importlib.metadata import version

    return {"salesforce-lavis": version("salesforce-lavis"), "transformers": transformers.__version__,
            "timm": version("timm"), "tokenizers": version("tokenizers"), "torch": torch.__version__}


def _stub_common(spec: dict) -> None:
    """The downloads every BLIP-2 class makes: BERT tokenizer, BERT config and weights, the EVA ViT."""
    from transformers import BertTokenizer

    from lavis.models import eva_vit
    from lavis.models.blip2_models import Qformer, blip2

    vocab_file = Path(spec["work"]) / "bert_vocab.txt"
    vocab_file.write_text("\n".join(spec["bert_vocab"]) + "\n")
    BertTokenizer.from_pretrained = classmethod(lambda cls, name, **kw: cls(str(vocab_file), do_lower_case=True,
                                                                             **kw))
    qformer = spec["config"]["qformer_config"]
    bert = dict(vocab_size=qformer["vocab_size"], hidden_size=qformer["hidden_size"],
                num_hidden_layers=qformer["num_hidden_layers"], num_attention_heads=qformer["num_attention_heads"],
                intermediate_size=qformer["intermediate_size"], hidden_act=qformer["hidden_act"],
                max_position_embeddings=qformer["max_position_embeddings"], layer_norm_eps=qformer["layer_norm_eps"],
                pad_token_id=qformer.get("pad_token_id", 0), hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0)
    Qformer.BertConfig.from_pretrained = classmethod(lambda cls, name, **kw: cls(**bert))
    Qformer.BertLMHeadModel.from_pretrained = classmethod(lambda cls, name, config, **kw: cls(config))
    vision = spec["config"]["vision_config"]

    def tiny_eva_vit(img_size=224, drop_path_rate=0.4, use_checkpoint=False, precision="fp16"):
        return eva_vit.VisionTransformer(
            img_size=img_size, patch_size=vision["patch_size"], use_mean_pooling=False,
            embed_dim=vision["hidden_size"], depth=vision["num_hidden_layers"],
            num_heads=vision["num_attention_heads"], mlp_ratio=vision["intermediate_size"] / vision["hidden_size"],
            qkv_bias=True, drop_path_rate=drop_path_rate, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_checkpoint=use_checkpoint)

    blip2.create_eva_vit_g = tiny_eva_vit
    original = blip2.Blip2Base.init_Qformer.__func__
    frequency = qformer["cross_attention_frequency"]
    blip2.Blip2Base.init_Qformer = classmethod(
        lambda cls, num_query_token, vision_width, cross_attention_freq=frequency:
        original(cls, num_query_token, vision_width, cross_attention_freq))


def _load(model: torch.nn.Module, spec: dict, allowed_missing: tuple[str, ...] = ()) -> dict:
    """The converted LAVIS state dict into LAVIS's model; every key must land (missing only the listed ones)."""
    state = torch.load(spec["pth"], map_location="cpu")["model"]
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(allowed_missing)]
    if missing or result.unexpected_keys:
        raise SystemExit(f"lavis_side: state dict does not fit LAVIS's model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    model.eval()
    return {"missing_allowed": sorted(result.missing_keys), "keys": len(state)}


def _intermediates(model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ViT output, ln_vision output, Q-Former query output): the calls generate() makes, in its order."""
    vit = model.visual_encoder(pixels)
    image_embeds = model.ln_vision(vit)
    image_atts = torch.ones(image_embeds.size()[:-1], dtype=torch.long)
    query_tokens = model.query_tokens.expand(image_embeds.shape[0], -1, -1)
    query = model.Qformer.bert(query_embeds=query_tokens, encoder_hidden_states=image_embeds,
                               encoder_attention_mask=image_atts, return_dict=True).last_hidden_state
    return vit, image_embeds, query


@torch.no_grad()
def run_opt(spec: dict) -> dict:
    from transformers import PreTrainedTokenizerFast

    _stub_common(spec)
    from lavis.models.blip2_models import blip2_opt, modeling_opt

    text = spec["config"]["text_config"]
    specials = spec["special_tokens"]
    tokenizer_file = _legacy_tokenizer_file(spec)
    blip2_opt.AutoTokenizer.from_pretrained = lambda name, **kw: PreTrainedTokenizerFast(
        tokenizer_file=tokenizer_file, **specials)
    modeling_opt.OPTForCausalLM.from_pretrained = classmethod(
        lambda cls, name, **kw: cls(modeling_opt.OPTConfig(**text)))
    model = blip2_opt.Blip2OPT(img_size=spec["image_size"], num_query_token=spec["config"]["num_query_tokens"],
                               vit_precision="fp32", prompt=spec["caption_prompt"])
    model.float()
    info = _load(model, spec)
    pixels = torch.load(spec["pixels"])
    out = _common_outputs(model, pixels, info)
    out["eos_token_id"] = int(model.eos_token_id)
    inputs_opt = model.opt_proj(out["qformer"])
    logits = []
    for prompt in spec["logit_prompts"]:
        tokens = model.opt_tokenizer([prompt] * pixels.shape[0], return_tensors="pt")
        attention = torch.cat([torch.ones(inputs_opt.shape[:-1], dtype=torch.long), tokens.attention_mask], dim=1)
        logits.append(model.opt_model(input_ids=tokens.input_ids, query_embeds=inputs_opt,
                                      attention_mask=attention, return_dict=True).logits)
    out["lm_logits"] = logits
    out["captions"] = _captions(model, pixels, spec)
    # Blip2OPT.generate takes one prompt per batch (1.0.2 has no predict_answers): questions batched by prompt
    out["answers"] = _by_prompt(spec["vqa"], lambda prompt, images: model.generate(
        {"image": pixels[images], "prompt": prompt}, **spec["vqa_generate"]))
    return out


def _legacy_tokenizer_file(spec: dict) -> str:
    """The tokenizer.json with BPE merges as 'a b' strings (the format tokenizers 0.13 reads)."""
    data = json.loads(Path(spec["tokenizer_file"]).read_text())
    model = data["model"]
    if model.get("type") == "BPE":
        model["merges"] = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
        model.pop("ignore_merges", None)
    for part in ("pre_tokenizer", "decoder"):  # Metaspace: prepend_scheme "always" was add_prefix_space true
        metaspace = data.get(part) or {}
        if metaspace.get("type") == "Metaspace" and "prepend_scheme" in metaspace:
            metaspace["add_prefix_space"] = metaspace.pop("prepend_scheme") != "never"
            metaspace.pop("split", None)
    path = Path(spec["work"]) / f"legacy_{Path(spec['pth']).stem}_tokenizer.json"
    path.write_text(json.dumps(data))
    return str(path)


@torch.no_grad()
def run_t5(spec: dict) -> dict:
    _stub_common(spec)
    from transformers import T5TokenizerFast

    from lavis.models.blip2_models import blip2_t5, modeling_t5

    # transformers 5 keeps "scale the decoder output by d_model**-0.5" apart from weight tying
    # (scale_decoder_outputs); transformers 4.26 scales exactly when tie_word_embeddings is set
    text = {**spec["config"]["text_config"],
            "tie_word_embeddings": bool(spec["config"]["text_config"].get("scale_decoder_outputs", True))}
    blip2_t5.T5TokenizerFast.from_pretrained = classmethod(
        lambda cls, name, **kw: T5TokenizerFast(tokenizer_file=_legacy_tokenizer_file(spec), extra_ids=0,
                                                **spec["special_tokens"]))
    modeling_t5.T5Config.from_pretrained = classmethod(lambda cls, name, **kw: cls(**text))
    modeling_t5.T5ForConditionalGeneration.from_pretrained = classmethod(lambda cls, name, config, **kw: cls(config))
    model = blip2_t5.Blip2T5(img_size=spec["image_size"], num_query_token=spec["config"]["num_query_tokens"],
                             vit_precision="fp32", prompt=spec["caption_prompt"])
    model.float()
    info = _load(model, spec)
    info["t5_dense_act_fn"] = model.t5_model.config.dense_act_fn
    pixels = torch.load(spec["pixels"])
    out = _common_outputs(model, pixels, info)
    inputs_t5 = model.t5_proj(out["qformer"])
    logits = []
    for prompt in spec["logit_prompts"]:
        tokens = model.t5_tokenizer([prompt] * pixels.shape[0], return_tensors="pt")
        embeds = torch.cat([inputs_t5, model.t5_model.encoder.embed_tokens(tokens.input_ids)], dim=1)
        attention = torch.cat([torch.ones(inputs_t5.shape[:-1], dtype=torch.long), tokens.attention_mask], dim=1)
        start = torch.full((pixels.shape[0], 1), model.t5_model.config.decoder_start_token_id)
        logits.append(model.t5_model(inputs_embeds=embeds, attention_mask=attention, decoder_input_ids=start,
                                     return_dict=True).logits)
    out["lm_logits"] = logits
    out["captions"] = _captions(model, pixels, spec)
    # batched by question, so that no batch pads a prompt (LAVIS pads T5 prompts on the right)
    questions = {item["prompt"]: item["question"] for item in spec["vqa"]}
    out["answers"] = _by_prompt(spec["vqa"], lambda prompt, images: model.predict_answers(
        {"image": pixels[images], "text_input": [questions[prompt]] * len(images)}, prompt=spec["vqa_prompt"],
        **spec["vqa_predict"]))
    return out


def _by_prompt(items: list[dict], answer, batch: int = 16) -> list[str]:
    """answer(prompt, image indices) over the items grouped by prompt; answers in the items' order."""
    answers: list[str | None] = [None] * len(items)
    groups: dict[str, list[int]] = {}
    for position, item in enumerate(items):
        groups.setdefault(item["prompt"], []).append(position)
    for prompt, positions in groups.items():
        for start in range(0, len(positions), batch):
            chunk = positions[start:start + batch]
            for position, text in zip(chunk, answer(prompt, [items[p]["image"] for p in chunk])):
                answers[position] = text
    return answers


@torch.no_grad()
def run_itm(spec: dict) -> dict:
    _stub_common(spec)
    from lavis.models.blip2_models.blip2 import compute_sim_matrix
    from lavis.models.blip2_models.blip2_image_text_matching import Blip2ITM

    config = spec["config"]
    model = Blip2ITM(img_size=spec["image_size"], num_query_token=config["num_query_tokens"], vit_precision="fp32",
                     cross_attention_freq=config["qformer_config"]["cross_attention_frequency"],
                     embed_dim=config["image_text_hidden_size"], max_txt_len=35)
    model.Qformer.resize_token_embeddings(config["qformer_config"]["vocab_size"])
    model.float()
    info = _load(model, spec, allowed_missing=("Qformer.cls.", "temp"))
    pixels = torch.load(spec["pixels"])
    out = _common_outputs(model, pixels, info)
    loader = _Loader(pixels, spec["texts"], batch=16)
    i2t, t2i = compute_sim_matrix(model, loader, k_test=spec["k_test"])
    out["i2t"], out["t2i"] = torch.from_numpy(i2t), torch.from_numpy(t2i)
    return out


class _Loader:
    """What compute_sim_matrix reads from LAVIS's retrieval data loader: .dataset.text/.image and image batches."""

    def __init__(self, pixels: torch.Tensor, texts: list[str], batch: int):
        self.pixels, self.batch = pixels, batch
        self.dataset = types.SimpleNamespace(text=texts, image=list(range(pixels.shape[0])))

    def __iter__(self):
        for start in range(0, self.pixels.shape[0], self.batch):
            yield {"image": self.pixels[start:start + self.batch]}


def _common_outputs(model, pixels: torch.Tensor, info: dict) -> dict:
    vit, image_embeds, query = _intermediates(model, pixels)
    return {"load": info, "vision_blocks": vit, "vision": image_embeds, "qformer": query}


def _captions(model, pixels: torch.Tensor, spec: dict) -> list[str]:
    captions = []
    pixels = pixels[:spec.get("caption_images") or pixels.shape[0]]
    for start in range(0, pixels.shape[0], 8):
        captions += model.generate({"image": pixels[start:start + 8]}, **spec["caption_generate"])
        print(f"lavis_side: captions {len(captions)}/{pixels.shape[0]}", file=sys.stderr, flush=True)
    return captions


RUNNERS = {"opt": run_opt, "t5": run_t5, "itm": run_itm}

if __name__ == "__main__":
    main(Path(sys.argv[1]))
