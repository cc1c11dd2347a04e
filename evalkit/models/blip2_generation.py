"""Batched BLIP-2 generation that gives the same answers as batch size 1.

The image side (vision tower + Q-Former + projection) is split from the text side so that
an image asked several questions is encoded once (VQA, chat). The text side reproduces what
`Blip2ForConditionalGeneration.generate` does with the processor's inputs, but on cached
query embeddings: [image tokens][padded prompt] -> embeddings with the query outputs scattered
into the image-token positions -> `language_model.generate`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from evalkit.models.image_preprocessing import ImagePreprocessor, image_pipeline
from evalkit.models.loading import LoadedCheckpoint
from evalkit.core.errors import EvalkitError
from evalkit.core.protocol import GenerationProtocol


KV_CACHES = ("auto", "dynamic", "static")  # --kv-cache; static is transformers' fixed-size cache_implementation


def resolve_kv_cache(requested: str, device: torch.device) -> str:
    """``auto``: static on CPU, where it measured 1.04-1.09x faster with the same answers (an OPT-125m-sized LM,
    greedy and the VQAv2 protocol, benchmarks/cpu_levers_bench.py); dynamic on a GPU, where transformers compiles static decoding and issue 12's
    anchors show it winning at batch 64 and losing at 256 (to be measured by `evalkit bench --kv-cache`)."""
    if requested not in KV_CACHES:
        raise EvalkitError(f"unknown KV cache {requested!r}; use one of {', '.join(KV_CACHES)}")
    if requested != "auto":
        return requested
    return "static" if device.type == "cpu" else "dynamic"


class Blip2Generator:
    """Turns (images, prompts) into answers with a loaded BLIP-2 generation checkpoint."""

    def __init__(self, checkpoint: LoadedCheckpoint, image_size: int | None = None, kv_cache: str = "auto",
                 pipeline: str = "lavis"):
        self.checkpoint = checkpoint
        self.kv_cache = resolve_kv_cache(kv_cache, checkpoint.device)
        self.model = checkpoint.model
        self.processor = checkpoint.processor
        self.tokenizer = checkpoint.processor.tokenizer
        self.device = checkpoint.device
        self.dtype = checkpoint.dtype
        self.decoder_only = bool(self.model.config.use_decoder_only_language_model)
        # Batched decoder-only generation must pad on the left, or the model continues from pads.
        self.tokenizer.padding_side = "left" if self.decoder_only else "right"
        self.num_query_tokens = int(self.model.config.num_query_tokens)
        self.image_token_id = int(_image_token_id(self.model.config, self.tokenizer))
        # learned absolute positions (OPT) cap the context; T5's relative positions do not
        self.max_positions = getattr(self.model.config.text_config, "max_position_embeddings", None) \
            if self.decoder_only else None
        self.pixel_values = ImagePreprocessor(self.processor, self.model.config.vision_config.image_size, image_size)
        self.image_size = self.pixel_values.image_size
        self.interpolate = self.pixel_values.interpolate
        self.image_pipeline = image_pipeline(pipeline, self.pixel_values, self.device)

    # -- image side -------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision tower + Q-Former + projection: [n, num_query_tokens, lm_hidden]."""
        pixel_values = pixel_values.to(self.device, self.model.vision_model.embeddings.patch_embedding.weight.dtype)
        vision = self.model.vision_model(pixel_values, interpolate_pos_encoding=self.interpolate, return_dict=True)
        image_embeds = vision.last_hidden_state
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = self.model.query_tokens.expand(image_embeds.shape[0], -1, -1)
        query_output = self.model.qformer(
            query_embeds=queries, encoder_hidden_states=image_embeds, encoder_attention_mask=mask, return_dict=True
        ).last_hidden_state
        # each component in its own precision: ViT (fp16 on GPU), Q-Former (fp32), projection + LM (fp16 / bf16)
        return self.model.language_projection(query_output.to(self.model.language_projection.weight.dtype))

    # -- text side --------------------------------------------------------------------------
    def prompt_token_count(self, prompt: str) -> int:
        """Tokens the prompt takes, special tokens included (without the image tokens)."""
        return len(self.tokenizer(prompt)["input_ids"])

    def prompt_token_counts(self, prompts: Sequence[str]) -> list[int]:
        """``prompt_token_count`` of many prompts in one tokenizer call."""
        return [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]] if prompts else []

    @torch.inference_mode()
    def generate(self, query_embeds: torch.Tensor, prompts: Sequence[str], protocol: GenerationProtocol) -> list[str]:
        """Answers for each (image query embeddings, prompt) pair, decoded and stripped."""
        truncation = {"truncation": True, "max_length": protocol.max_prompt_tokens} if protocol.max_prompt_tokens else {}
        encoded = self.tokenizer(list(prompts), padding=True, return_tensors="pt", **truncation)
        batch = len(prompts)
        image_ids = torch.full((batch, self.num_query_tokens), self.image_token_id, dtype=torch.long)
        input_ids = torch.cat([image_ids, encoded["input_ids"]], dim=1).to(self.device)
        attention_mask = torch.cat([torch.ones_like(image_ids), encoded["attention_mask"]], dim=1).to(self.device)
        embeddings = self.model.get_input_embeddings()(input_ids)
        image_positions = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeddings)
        embeddings = embeddings.masked_scatter(image_positions, query_embeds.to(embeddings.device, embeddings.dtype))
        inputs = {"inputs_embeds": embeddings, "attention_mask": attention_mask}
        if self.decoder_only:
            inputs["input_ids"] = input_ids
        kwargs = self.generation_kwargs(protocol)
        kwargs["min_new_tokens"] = self.min_new_tokens(protocol, encoded["attention_mask"].sum(dim=1).tolist())
        if protocol.do_sample:  # the same seed draws the same tokens for the same batch
            torch.manual_seed(protocol.seed)
        output = self.model.language_model.generate(**inputs, **kwargs)
        if self.decoder_only:  # decoder-only models return image tokens + prompt + answer
            output = output[:, input_ids.shape[1]:]
        texts = self.tokenizer.batch_decode(output, skip_special_tokens=True)
        return [clean_answer(text, protocol.stop_at_newline) for text in texts]

    def min_new_tokens(self, protocol: GenerationProtocol, prompt_lengths: list[int]) -> int:
        """The protocol's minimum as new tokens: ``min_new_tokens``, or more where LAVIS's ``min_length`` asks.

        transformers 4.26 (LAVIS) counted ``min_length`` over the decoder's input: BOS + prompt + answer for
        OPT (so LAVIS's 8 with "a photo of" means 4 new tokens), the decoder start token + answer for T5.
        """
        if not protocol.min_length:
            return protocol.min_new_tokens
        already = prompt_lengths if self.decoder_only else [1] * len(prompt_lengths)
        needed = {max(protocol.min_new_tokens, protocol.min_length - n) for n in already}
        if len(needed) > 1:
            raise EvalkitError(f"min_length {protocol.min_length} with prompts of different token lengths in one "
                               "batch would need a different minimum per prompt; set --min-length 0 and use "
                               "--min-new-tokens")
        return needed.pop()

    def generation_kwargs(self, protocol: GenerationProtocol) -> dict:
        """Decoding settings for `generate`: max/min *new* tokens, never max_length."""
        kwargs = {
            "do_sample": protocol.do_sample,
            "num_beams": protocol.num_beams,
            "max_new_tokens": protocol.max_new_tokens,
            "min_new_tokens": protocol.min_new_tokens,
            "length_penalty": protocol.length_penalty,
            "repetition_penalty": protocol.repetition_penalty,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if protocol.do_sample:
            # as LAVIS's use_nucleus_sampling: top_p and temperature, transformers' other defaults (top_k 50)
            kwargs.update(temperature=protocol.temperature, top_p=protocol.top_p)
        if self.kv_cache != "dynamic":
            kwargs["cache_implementation"] = self.kv_cache
        if protocol.stop_at_newline and self.decoder_only:
            eos = self.model.language_model.generation_config.eos_token_id
            eos_ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
            newline = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
            if len(newline) == 1 and newline[0] not in eos_ids:
                eos_ids.append(newline[0])
            if eos_ids:
                kwargs["eos_token_id"] = eos_ids
        return kwargs


def clean_answer(text: str, stop_at_newline: bool) -> str:
    """Cut at the first newline when the protocol says so, then strip."""
    if stop_at_newline:
        text = text.split("\n", 1)[0]
    return text.strip()


def _image_token_id(config, tokenizer) -> int:
    token_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
    if token_id is None:
        token_id = tokenizer.convert_tokens_to_ids("<image>")
    return token_id
