"""Family-specific glue for loading and training real VLM families offline (imported by align.modeling).

Image-only processors. Qwen2-VL, Qwen2.5-VL and SmolVLM processors insist on a video processor, and every
video processor needs torchvision (which the CPU torch build here cannot have beside it). halign trains on
images only, so these subclasses take the image processor and the tokenizer and nothing else. They keep
their parent's class *name*: `save_pretrained` writes `"processor_class": "Qwen2VLProcessor"` exactly as a
hub checkpoint does, so what halign saves loads anywhere with plain transformers (with torchvision). Because
that name resolves to transformers' own class in `AutoProcessor`, `load_processor` below dispatches on the
config's `model_type` first; the classes are also registered with `AutoProcessor` for checkpoints whose
files name no processor class at all.

PaliGemma: its processor builds the prompt itself (image tokens + BOS + prefix + "\\n" + suffix), emits its
own labels and refuses text without images, so TRL's DPO collator (prompt and completion tokenized apart)
breaks on it. SFT works; DPO is refused up front (`check_stage_support`).
"""
from __future__ import annotations

import json
from pathlib import Path

from reward.files import InputError

# model_type -> family, for messages and per-family behaviour
FAMILY_OF_MODEL_TYPE = {
    "llava": "llava", "llava_next": "llava-next", "qwen2_vl": "qwen2-vl", "qwen2_5_vl": "qwen2.5-vl",
    "idefics3": "idefics3", "smolvlm": "smolvlm", "paligemma": "paligemma",
}
# stages a family cannot run, with the reason and what to do instead
UNSUPPORTED = {
    ("paligemma", "dpo"): (
        "PaliGemma's processor builds its own prompt (image tokens, BOS, prefix, newline, suffix) and emits "
        "labels, which TRL's DPO collator (prompt and completion tokenized separately) cannot use",
        "train PaliGemma with `halign sft`, or run DPO on LLaVA, Qwen2-VL/2.5-VL, Idefics3 or SmolVLM"),
}


from transformers import (AutoProcessor, Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLConfig,  # noqa: E402
                          Qwen2VLProcessor, SmolVLMConfig, SmolVLMProcessor)
from transformers.processing_utils import ProcessorMixin  # noqa: E402

# The parents' __init__ pass (image_processor, tokenizer, None) on to ProcessorMixin, which pairs positional
# arguments with *this* class's attributes (read from the __init__ signature): the video processor is
# dropped. Other __init__ parameters (SmolVLM's image_seq_len) must stay named in the signature, because
# that is also how `save_pretrained` decides what to write to processor_config.json.


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """Qwen2VLProcessor for images only (no video processor, so no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2_5_VLProcessor for images only (no video processor, so no torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlySmolVLMProcessor(SmolVLMProcessor):
    """SmolVLMProcessor for images only (no video processor, so no torchvision)."""

    def __init__(self, image_processor, tokenizer, image_seq_len: int = 169, chat_template: str | None = None,
                 **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_len=image_seq_len,
                         chat_template=chat_template, **kwargs)

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        # SmolVLM's override reads video_processor.num_frames/fps on every call; the generic rendering is
        # all an image-only processor needs.
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


IMAGE_ONLY_PROCESSORS = {"qwen2_vl": ImageOnlyQwen2VLProcessor, "qwen2_5_vl": ImageOnlyQwen2_5_VLProcessor,
                         "smolvlm": ImageOnlySmolVLMProcessor}
for _config_class, _processor_class in ((Qwen2VLConfig, ImageOnlyQwen2VLProcessor),
                                        (Qwen2_5_VLConfig, ImageOnlyQwen2_5_VLProcessor),
                                        (SmolVLMConfig, ImageOnlySmolVLMProcessor)):
    # saved under the parent's name, exactly like a hub checkpoint (see the module docstring)
    _processor_class.__name__ = _processor_class.__mro__[1].__name__
    AutoProcessor.register(_config_class, _processor_class, exist_ok=True)


def model_type_of(name_or_path: str, trust_remote_code: bool = False) -> str | None:
    """The checkpoint's `model_type` (config.json of a local folder, else AutoConfig); None if unknown."""
    config_file = Path(name_or_path) / "config.json"
    if config_file.is_file():
        try:
            return json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        except (OSError, json.JSONDecodeError):
            return None
    try:
        from transformers import AutoConfig
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError):
        return None


def load_processor(name_or_path: str, trust_remote_code: bool = False):
    """The family's image-only processor where one is needed, else AutoProcessor's choice."""
    from transformers import AutoProcessor

    processor_class = IMAGE_ONLY_PROCESSORS.get(model_type_of(name_or_path, trust_remote_code))
    if processor_class is not None:
        return processor_class.from_pretrained(name_or_path)
    return AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)


def family_of(model) -> str:
    model_type = getattr(model.config, "model_type", "")
    return FAMILY_OF_MODEL_TYPE.get(model_type, model_type)


def check_stage_support(model_or_type, stage: str, where: str | None = None) -> None:
    """Refuse, before any data is read, a stage the family cannot run."""
    model_type = model_or_type if isinstance(model_or_type, str) else getattr(model_or_type.config, "model_type", "")
    reason = UNSUPPORTED.get((model_type, stage))
    if reason is not None:
        raise InputError(f"{stage} is not supported for {FAMILY_OF_MODEL_TYPE.get(model_type, model_type)}: "
                         f"{reason[0]}", file=where, fix=reason[1])
