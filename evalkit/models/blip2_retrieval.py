"""BLIP-2 retrieval features and ITM scores (Blip2ForImageTextRetrieval), as LAVIS computes them.

Image side: vision tower -> Q-Former queries -> vision_projection -> L2-normalised, [n, 32, 256].
Text side: Q-Former text CLS -> text_projection -> L2-normalised, [n, 256]; text cut to 35 tokens.
ITM: Q-Former over [queries; text] attending to the image, itm_head on the query outputs,
averaged over the queries (LAVIS compute_itm), positive-class logit.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from evalkit.models.image_preprocessing import ImagePreprocessor
from evalkit.models.loading import LoadedCheckpoint
from evalkit.models.qformer_kv_reuse import reused_image_kv


class Blip2Retriever:
    """ITC features and ITM logits from a loaded Blip2ForImageTextRetrieval checkpoint."""

    def __init__(self, checkpoint: LoadedCheckpoint, image_size: int | None = None, max_text_tokens: int = 35):
        self.model = checkpoint.model
        self.processor = checkpoint.processor
        self.tokenizer = checkpoint.processor.tokenizer
        self.device = checkpoint.device
        self.dtype = checkpoint.dtype
        self.max_text_tokens = max_text_tokens
        self.pixel_values = ImagePreprocessor(self.processor, self.model.config.vision_config.image_size, image_size)
        self.interpolate = self.pixel_values.interpolate

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(vision embeddings for ITM [n, patches, d_vision], normalised ITC query features [n, q, d])."""
        pixel_values = pixel_values.to(self.device, self.model.vision_model.embeddings.patch_embedding.weight.dtype)
        image_embeds = self.model.vision_model(pixel_values, interpolate_pos_encoding=self.interpolate,
                                               return_dict=True).last_hidden_state
        mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        queries = self.model.query_tokens.expand(image_embeds.shape[0], -1, -1)
        query_output = self.model.qformer(query_embeds=queries, encoder_hidden_states=image_embeds,
                                          encoder_attention_mask=mask, return_dict=True).last_hidden_state
        query_output = query_output.to(self.model.vision_projection.weight.dtype)
        features = F.normalize(self.model.vision_projection(query_output), dim=-1)
        return image_embeds, features

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Q-Former tokens, truncated to the protocol's text length (35 in LAVIS)."""
        return self.tokenizer(list(texts), padding="longest", truncation=True, max_length=self.max_text_tokens,
                              return_tensors="pt")

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Normalised projected text CLS features [n, d]."""
        tokens = self.tokenize(texts)
        embeds = self.model.embeddings(input_ids=tokens["input_ids"].to(self.device))
        output = self.model.qformer(query_embeds=embeds, query_length=0,
                                    attention_mask=tokens["attention_mask"].to(self.device),
                                    return_dict=True).last_hidden_state
        output = output.to(self.model.text_projection.weight.dtype)
        return F.normalize(self.model.text_projection(output[:, 0, :]), dim=-1)

    @torch.inference_mode()
    def itm_logits(self, image_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   reuse_image_kv: bool = True) -> torch.Tensor:
        """Positive-class ITM logit per (image, text) pair, averaged over the query outputs.

        With ``reuse_image_kv`` consecutive pairs of the same image share its cross-attention keys and
        values (computed once, see :mod:`evalkit.models.qformer_kv_reuse`); ``False`` is the plain forward.
        """
        image_embeds = image_embeds.to(self.device)
        if reuse_image_kv:
            with reused_image_kv(self.model.qformer, image_embeds):
                return self.itm_logits(image_embeds, input_ids, attention_mask, reuse_image_kv=False)
        queries = self.model.query_tokens.expand(image_embeds.shape[0], -1, -1)
        query_mask = torch.ones(queries.shape[:-1], dtype=torch.long, device=self.device)
        mask = torch.cat([query_mask, attention_mask.to(self.device)], dim=1)
        embeds = self.model.embeddings(input_ids=input_ids.to(self.device), query_embeds=queries)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        output = self.model.qformer(query_embeds=embeds, query_length=queries.shape[1], attention_mask=mask,
                                    encoder_hidden_states=image_embeds, encoder_attention_mask=image_mask,
                                    return_dict=True).last_hidden_state
        output = output.to(self.model.itm_head.weight.dtype)
        logits = self.model.itm_head(output[:, : queries.shape[1], :]).mean(dim=1)
        return logits[:, 1].float()
