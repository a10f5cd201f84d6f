"""Tiny VLMs of the real architectures, built offline from their config classes.

The demo's model is a LLaVA: a CLIP-style vision tower, LLaVA's MLP projector and a Llama decoder, with a
byte-level BPE tokenizer trained here on the world's own text and a LLaVA-1.5-style chat template. It is
saved with `save_pretrained` and from then on loaded exactly like a hub checkpoint
(`AutoModelForImageTextToText` / `AutoProcessor`), so every later stage runs the code path real models use.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]

# LLaVA-1.5's conversation layout, with a newline after "ASSISTANT:" instead of LLaVA's space: under
# byte-level BPE a leading space fuses with the answer's first word ("ĠNo"), so a space outside the
# {% generation %} block would be a token the model never learns to emit; a newline is its own token.
# The markers let TRL compute the loss on assistant tokens only; nothing follows the end-of-turn token,
# so DPO's completion mask holds the answer and </s> alone. (A newline right after a block tag would be
# eaten by the trim_blocks environment transformers renders templates in, hence {{ '\\n' }}.)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['content'] is string %}{% set parts = [{'type': 'text', 'text': message['content']}] %}"
    "{% else %}{% set parts = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}USER: {% for p in parts %}{% if p['type'] == 'image' %}<image>\n"
    "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{{ '\\n' }}"
    "{% elif message['role'] == 'assistant' %}ASSISTANT:\n{% generation %}{% for p in parts %}"
    "{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}</s>{% endgeneration %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:\n{% endif %}"
)


@dataclass
class TinyLlavaConfig:
    """Sizes of the demo's LLaVA. Defaults give ~1M parameters: seconds per epoch on a laptop CPU."""
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 96
    vision_layers: int = 3
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    vocab_size: int = 512
    max_positions: int = 256
    seed: int = 0


def world_texts(world_dir: Path) -> list[str]:
    """Every sentence the tiny tokenizer should know: SFT rows, GT captions, the vocabulary's words."""
    texts: list[str] = ["USER: <image>\nDescribe the image.\nASSISTANT:\nYes.", "No."]
    with open(world_dir / "sft_train.jsonl", encoding="utf-8") as f:
        for line in f:
            for msg in json.loads(line)["messages"]:
                texts += [p["text"] for p in msg["content"] if p.get("type") == "text"]
    for split in ("train", "pairs", "eval"):
        path = world_dir / f"captions_{split}.json"
        if path.exists():
            texts += [a["caption"] for a in json.loads(path.read_text())["annotations"]]
    import yaml
    vocab = yaml.safe_load((Path(__file__).resolve().parents[1] / "reward" / "vocabularies" /
                            "shapes.yaml").read_text())
    for forms in vocab["objects"].values():
        texts += [f"a {w} and two {w}s" for w in forms]
    return texts


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Byte-level BPE trained on `texts` (no download), wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"}, chat_template=CHAT_TEMPLATE, padding_side="left",
    )


def build_tiny_llava(tokenizer, cfg: TinyLlavaConfig):
    """A randomly initialised LLaVA (CLIP tower + MLP projector + Llama) and its processor."""
    import torch
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    torch.manual_seed(cfg.seed)
    n_patches = (cfg.image_size // cfg.patch_size) ** 2
    vision = CLIPVisionConfig(image_size=cfg.image_size, patch_size=cfg.patch_size,
                              hidden_size=cfg.vision_hidden, intermediate_size=2 * cfg.vision_hidden,
                              num_hidden_layers=cfg.vision_layers, num_attention_heads=cfg.vision_heads,
                              projection_dim=cfg.vision_hidden)
    # Llama's initializer_range (0.02) suits widths in the thousands. At width 128 it leaves text
    # embeddings at norm ~0.2 next to image tokens near 1, and attention logits near zero: 64 image tokens
    # drown the question, and a model trained from scratch takes >1000 steps to learn that "Is there a
    # star?" depends on the word "star" (POPE stays at 50 % for hundreds of steps). A fan-in init
    # (1/sqrt(width)) fixes both: yes/no accuracy 0.93 after 500 steps instead of 0.5.
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.text_hidden,
                       intermediate_size=2 * cfg.text_hidden, num_hidden_layers=cfg.text_layers,
                       num_attention_heads=cfg.text_heads, num_key_value_heads=cfg.text_heads,
                       max_position_embeddings=cfg.max_positions, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                       tie_word_embeddings=True, initializer_range=cfg.text_hidden ** -0.5)
    # vision_feature_layer=-1: a 3-layer tower has no penultimate layer worth skipping to, unlike CLIP-L.
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=tokenizer.image_token_id,
                         image_seq_length=n_patches, vision_feature_layer=-1,
                         vision_feature_select_strategy="default", tie_word_embeddings=True)
    model = LlavaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": cfg.image_size},
                                            crop_size={"height": cfg.image_size, "width": cfg.image_size})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=cfg.patch_size,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    return model, processor


def create_tiny_llava(world_dir: Path, out: Path, cfg: TinyLlavaConfig | None = None) -> Path:
    """Train the tokenizer on the world's text, build the model, save both as a checkpoint folder."""
    from reward.files import atomic_path

    cfg = cfg or TinyLlavaConfig()
    tokenizer = train_tokenizer(world_texts(Path(world_dir)), cfg.vocab_size)
    model, processor = build_tiny_llava(tokenizer, cfg)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return Path(out)
