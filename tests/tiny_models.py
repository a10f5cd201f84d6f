"""Tiny random VLMs of every supported family, built offline, for tests (this repo's and other branches').

    from tests.tiny_models import build_tiny, FAMILIES
    path = build_tiny("qwen2-vl", tmp_path)          # a checkpoint folder, like a hub download
    model, processor = load_model_and_processor(...)  # or AutoModelForImageTextToText + align.modeling

Each family is its real model class, built from its config class with tiny sizes (~0.2-0.5 M parameters),
a byte-level BPE tokenizer trained here on shape-world sentences with the family's own special tokens, the
family's image processor (PIL variants: no torchvision), a chat template in the family's layout with
`{% generation %}` markers (TRL's assistant_only_loss) and the family's processor. Everything is written
with `save_pretrained`, so tests load it through the same code path as a hub checkpoint. Byte-level BPE
encodes any text, so other data than the default sentences works too (pass `texts` for a better fit).

Image sizes: every family gets 32x32 vision tiles with 8x8 patches. Qwen2-VL/2.5-VL resize to multiples of
16 between 16x16 and 64x64 pixels and Idefics3/SmolVLM split images larger than 32 px into 32 px tiles plus
a global view, so their image-token counts depend on the image size, as with the real checkpoints.
"""
from __future__ import annotations

from pathlib import Path

FAMILIES = ("llava-clip", "llava-siglip", "qwen2-vl", "qwen2.5-vl", "idefics3", "smolvlm", "paligemma")
# families that TRL's DPO (and halign's variants) can train; PaliGemma is refused up front (align/families.py)
DPO_FAMILIES = tuple(f for f in FAMILIES if f != "paligemma")

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star", "heart", "moon", "diamond", "ring", "arrow", "bolt")
IMAGE_TILE, PATCH = 32, 8
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024)


def default_texts() -> list[str]:
    """Sentences of the synthetic shape world: enough for BPE to learn its words as single tokens."""
    texts = ["Describe the image.", "Yes.", "No.", "Is there a circle in the image?"]
    for i, shape in enumerate(SHAPES):
        for j, colour in enumerate(COLOURS):
            other = SHAPES[(i + j + 1) % len(SHAPES)]
            texts.append(f"There is a {colour} {shape} and two {COLOURS[(j + 1) % 6]} {other}s in the image.")
            texts.append(f"A {colour} {shape} next to a {other}. Is there a {shape}? Yes, there is.")
    return texts


def _bpe(specials: list[str], texts, vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    return tok


def _fast(tok, chat_template: str | None, **special):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=chat_template, padding_side="left",
                                   **special)


def _parts(var: str = "message") -> str:
    """Jinja: `parts` = the message's content as a list of typed parts (string content allowed)."""
    return (f"{{% if {var}['content'] is string %}}{{% set parts = [{{'type': 'text', 'text': {var}['content']}}] %}}"
            f"{{% else %}}{{% set parts = {var}['content'] %}}{{% endif %}}")


def _text_parts() -> str:
    return "{% for p in parts %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}"


# Qwen2-VL / Qwen2.5-VL (ChatML): the real template's layout without the default system prompt.
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n" + _parts() +
    "{% if message['role'] == 'assistant' %}{% generation %}" + _text_parts() +
    "<|im_end|>{% endgeneration %}{{ '\\n' }}"
    "{% else %}{% for p in parts %}{% if p['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}<|im_end|>{{ '\\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _idefics_template(begin: str) -> str:
    """Idefics3 / SmolVLM: "User:<image>text<end_of_utterance>\\nAssistant: text<end_of_utterance>\\n"."""
    return (
        begin + "{% for message in messages %}" + _parts() + "{{ message['role'] | capitalize }}"
        "{% if message['role'] == 'assistant' %}:{% generation %} " + _text_parts() +
        "<end_of_utterance>{% endgeneration %}{{ '\\n' }}"
        "{% else %}{% if parts[0]['type'] == 'image' %}:{% else %}: {% endif %}{% for p in parts %}"
        "{% if p['type'] == 'text' %}{{ p['text'] }}{% elif p['type'] == 'image' %}<image>{% endif %}"
        "{% endfor %}<end_of_utterance>{{ '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}Assistant:{% endif %}"
    )


def _llava(texts, tower: str, text_kw: dict):
    import torch
    from transformers import (CLIPImageProcessorPil, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor, SiglipImageProcessorPil,
                              SiglipVisionConfig)

    from align.tiny import CHAT_TEMPLATE, SPECIAL_TOKENS

    tokenizer = _fast(_bpe(SPECIAL_TOKENS, texts), CHAT_TEMPLATE, bos_token="<s>", eos_token="</s>",
                      unk_token="<unk>", pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    vision = dict(image_size=IMAGE_TILE, patch_size=PATCH, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=2)
    n_patches = (IMAGE_TILE // PATCH) ** 2
    if tower == "clip":
        # LLaVA-1.5: CLIP tower, CLS token dropped ("default"), as llava-hf/llava-1.5-7b-hf
        vision_config, strategy, extra = CLIPVisionConfig(projection_dim=32, **vision), "default", 1
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": IMAGE_TILE},
                                                crop_size={"height": IMAGE_TILE, "width": IMAGE_TILE})
    else:
        # SigLIP tower: no CLS token and no pooling head, every patch feature kept ("full")
        vision_config, strategy, extra = SiglipVisionConfig(vision_use_head=False, **vision), "full", 0
        image_processor = SiglipImageProcessorPil(size={"height": IMAGE_TILE, "width": IMAGE_TILE})
    text = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **text_kw)
    config = LlavaConfig(vision_config=vision_config, text_config=text, image_token_index=tokenizer.image_token_id,
                         image_seq_length=n_patches, vision_feature_layer=-1,
                         vision_feature_select_strategy=strategy)
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
                               vision_feature_select_strategy=strategy, num_additional_image_tokens=extra,
                               chat_template=CHAT_TEMPLATE)
    return model, processor


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]


def _qwen(texts, version: str, text_kw: dict):
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig,
                              Qwen2VLForConditionalGeneration)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from align.families import ImageOnlyQwen2_5_VLProcessor, ImageOnlyQwen2VLProcessor

    tokenizer = _fast(_bpe(QWEN_SPECIALS, texts), QWEN_TEMPLATE, eos_token="<|im_end|>",
                      pad_token="<|endoftext|>",
                      extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                            "vision_bos_token": "<|vision_start|>",
                                            "vision_eos_token": "<|vision_end|>"})
    ids = tokenizer.convert_tokens_to_ids
    # 16 = patch 8 x merge 2: images are resized to multiples of 16 px, between 16x16 and 64x64 pixels
    image_processor = Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=2, temporal_patch_size=2,
                                               min_pixels=16 * 16, max_pixels=64 * 64)
    # M-RoPE: the sections (temporal, height, width) sum to head_dim / 2 = 64 / 4 / 2
    text = dict(vocab_size=len(tokenizer), rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                            "mrope_section": [2, 3, 3]},
                bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"),
                pad_token_id=ids("<|endoftext|>"), **text_kw)
    tokens = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                  vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))
    if version == "2":
        vision = dict(depth=2, embed_dim=32, hidden_size=text_kw["hidden_size"], num_heads=2, mlp_ratio=2,
                      patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2)
        config, model_class, processor_class = Qwen2VLConfig(text_config=text, vision_config=vision, **tokens), \
            Qwen2VLForConditionalGeneration, ImageOnlyQwen2VLProcessor
    else:
        # window attention over 2x2 merged patches (window_size 32 px), full attention in the last block
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                      out_hidden_size=text_kw["hidden_size"], patch_size=PATCH, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=32, fullatt_block_indexes=[1])
        config, model_class, processor_class = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens), \
            Qwen2_5_VLForConditionalGeneration, ImageOnlyQwen2_5_VLProcessor
    torch.manual_seed(0)
    model = model_class(config)
    processor = processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN_TEMPLATE)
    return model, processor


IDEFICS_SPECIALS = ["<|end_of_text|>", "<|begin_of_text|>", "<|im_start|>", "<end_of_utterance>",
                    "<fake_token_around_image>", "<image>", "<global-img>"] + \
                   [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


def _idefics(texts, smol: bool, text_kw: dict):
    import torch
    from transformers import (Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil,
                              Idefics3Processor, SmolVLMConfig, SmolVLMForConditionalGeneration,
                              SmolVLMImageProcessorPil)

    from align.families import ImageOnlySmolVLMProcessor

    begin = "<|im_start|>" if smol else "<|begin_of_text|>"
    template = _idefics_template(begin)
    tokenizer = _fast(_bpe(IDEFICS_SPECIALS, texts), template, bos_token=begin, eos_token="<end_of_utterance>",
                      pad_token="<|end_of_text|>",
                      extra_special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                                            "global_image_token": "<global-img>",
                                            "end_of_utterance_token": "<end_of_utterance>"})
    ids = tokenizer.convert_tokens_to_ids
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE_TILE, patch_size=PATCH)
    text = dict(model_type="llama", vocab_size=len(tokenizer), bos_token_id=ids(begin),
                eos_token_id=ids("<end_of_utterance>"), pad_token_id=ids("<|end_of_text|>"), **text_kw)
    # pixel shuffle by 2: (32 / 8)^2 / 2^2 = 4 image tokens per 32 px tile; images longer than 32 px are
    # split into 32 px tiles (after resizing the longest edge to at most 64 px) plus a global view
    image_seq_len = (IMAGE_TILE // PATCH) ** 2 // 4
    split = dict(do_image_splitting=True, size={"longest_edge": 2 * IMAGE_TILE},
                 max_image_size={"longest_edge": IMAGE_TILE})
    torch.manual_seed(0)
    if smol:
        config = SmolVLMConfig(vision_config=vision, text_config=text, scale_factor=2,
                               image_token_id=ids("<image>"), pad_token_id=ids("<|end_of_text|>"))
        model = SmolVLMForConditionalGeneration(config)
        processor = ImageOnlySmolVLMProcessor(image_processor=SmolVLMImageProcessorPil(**split), tokenizer=tokenizer,
                                              image_seq_len=image_seq_len, chat_template=template)
    else:
        config = Idefics3Config(vision_config=vision, text_config=text, scale_factor=2,
                                image_token_id=ids("<image>"), pad_token_id=ids("<|end_of_text|>"))
        model = Idefics3ForConditionalGeneration(config)
        processor = Idefics3Processor(image_processor=Idefics3ImageProcessorPil(**split), tokenizer=tokenizer,
                                      image_seq_len=image_seq_len, chat_template=template)
    return model, processor


def _paligemma(texts, text_kw: dict):
    import torch
    from transformers import (PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              SiglipImageProcessorPil)

    tokenizer = _fast(_bpe(["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], texts), None, bos_token="<bos>",
                      eos_token="<eos>", unk_token="<unk>", pad_token="<pad>",
                      extra_special_tokens={"image_token": "<image>"})
    n_patches = (IMAGE_TILE // PATCH) ** 2
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_TILE, "width": IMAGE_TILE})
    image_processor.image_seq_length = n_patches
    # the processor adds PaliGemma's <locXXXX>/<segXXX> tokens to the tokenizer: size the model after it
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    ids = tokenizer.convert_tokens_to_ids
    vision = dict(image_size=IMAGE_TILE, patch_size=PATCH, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=2, vision_use_head=False, projection_dim=64)
    text = dict(model_type="gemma", vocab_size=len(tokenizer), head_dim=16, bos_token_id=ids("<bos>"),
                eos_token_id=ids("<eos>"), pad_token_id=ids("<pad>"), **text_kw)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=ids("<image>"),
                             projection_dim=64, hidden_size=64, vocab_size=len(tokenizer))
    torch.manual_seed(0)
    return PaliGemmaForConditionalGeneration(config), processor


BUILDERS = {
    "llava-clip": lambda t, kw: _llava(t, "clip", kw),
    "llava-siglip": lambda t, kw: _llava(t, "siglip", kw),
    "qwen2-vl": lambda t, kw: _qwen(t, "2", kw),
    "qwen2.5-vl": lambda t, kw: _qwen(t, "2.5", kw),
    "idefics3": lambda t, kw: _idefics(t, False, kw),
    "smolvlm": lambda t, kw: _idefics(t, True, kw),
    "paligemma": _paligemma,
}


def build_tiny_in_memory(family: str, texts=None, text_size: dict | None = None):
    """(model, processor) of `family`, random weights, not saved. `text_size` overrides the language model's
    sizes (hidden_size, intermediate_size, num_hidden_layers, ...), e.g. for a benchmark."""
    if family not in BUILDERS:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    model, processor = BUILDERS[family](list(texts) if texts is not None else default_texts(),
                                        {**TEXT, **(text_size or {})})
    tok = processor.tokenizer
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(tok, key, None)
        if value is not None:
            setattr(model.generation_config, key, value)
    return model, processor


def build_tiny(family: str, tmp_path, texts=None, text_size: dict | None = None) -> Path:
    """Save a tiny `family` checkpoint (model + processor) under tmp_path and return its folder.

    Built once per folder: a second call with the same tmp_path returns the existing checkpoint."""
    out = Path(tmp_path) / f"tiny-{family}"
    if (out / "config.json").is_file():
        return out
    from reward.files import atomic_path

    model, processor = build_tiny_in_memory(family, texts, text_size)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out
