"""Tiny random-weight BLIP-2 checkpoints for tests, saved and loaded like hub checkpoints.

Tokenizers are trained here with the `tokenizers` library; nothing touches the network.
"""

from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "a photo of a cat on a mat", "a dog runs in the park", "Question: what color is the car? Short answer:",
    "how many people are there", "is there a red ball in the picture", "a man riding a horse near the sea",
    "two birds sit on a wire", "the quick brown fox jumps over the lazy dog", "yes no 1 2 3 4 red blue green",
    "Question: Answer: Short answer: what where who why when which",
]


def _tokenizer(kind: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers, decoders
    from transformers import PreTrainedTokenizerFast

    if kind == "opt":
        specials = ["<pad>", "</s>", "<unk>", "<image>"]
    else:
        specials = ["<pad>", "</s>", "<unk>", "<image>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    eos_id = tok.token_to_id("</s>")
    if kind == "opt":  # OPT prepends </s> as BOS
        tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", eos_id)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>",
                                       pad_token="<pad>", unk_token="<unk>", padding_side="left")
    else:  # T5 appends </s>
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos_id)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>",
                                       unk_token="<unk>", padding_side="right")
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def build_tiny_blip2(directory: Path, family: str = "opt", seed: int = 0, image_size: int = 32,
                     num_query_tokens: int = 4) -> Path:
    """Write a random tiny Blip2ForConditionalGeneration checkpoint + processor to ``directory``."""
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, OPTConfig, T5Config)

    torch.manual_seed(seed)
    tokenizer = _tokenizer(family)
    vocab = len(tokenizer)
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=image_size, patch_size=8)
    qformer = Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 encoder_hidden_size=32, vocab_size=100, cross_attention_frequency=1)
    if family == "opt":
        text = OPTConfig(vocab_size=vocab, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
                         word_embed_proj_dim=32, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    else:
        text = T5Config(vocab_size=vocab, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_decoder_layers=2,
                        num_heads=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                        decoder_start_token_id=tokenizer.pad_token_id, feed_forward_proj="gated-gelu",
                        tie_word_embeddings=False)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                         text_config=text.to_dict(), num_query_tokens=num_query_tokens,
                         image_token_index=image_token_id)
    config.image_token_id = image_token_id
    model = Blip2ForConditionalGeneration(config).eval()
    # random init gives near-uniform logits; widen them so greedy/beam choices are not near-ties
    with torch.no_grad():
        head = model.language_model.get_output_embeddings().weight
        head.normal_(0.0, 1.0 if family == "t5" else 0.5)
        for token in (tokenizer.pad_token_id, tokenizer.unk_token_id, image_token_id):
            head[token] = 0.0
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def build_tiny_itm(directory: Path, seed: int = 0, image_size: int = 32, num_query_tokens: int = 4) -> Path:
    """Write a random tiny Blip2ForImageTextRetrieval checkpoint (BERT-style WordPiece tokenizer)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor, Blip2QFormerConfig,
                              Blip2VisionConfig, BlipImageProcessor, PreTrainedTokenizerFast)

    torch.manual_seed(seed)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    vision = Blip2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=image_size, patch_size=8)
    qformer = Blip2QFormerConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                 encoder_hidden_size=32, vocab_size=len(tokenizer) + 1, cross_attention_frequency=1,
                                 max_position_embeddings=64, use_qformer_text_input=True)
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(),
                         num_query_tokens=num_query_tokens, image_text_hidden_size=16)
    model = Blip2ForImageTextRetrieval(config).eval()
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
                               tokenizer=tokenizer, num_query_tokens=num_query_tokens)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
