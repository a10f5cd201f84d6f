"""The SFT collator's list-mode chat template (align.sft.ListModeChatTemplate) gives the very batch TRL's
own collator builds, on every family with a chat template, with multi-turn rows (several assistant spans) of different lengths
and image sizes, truncation included; only faster."""
from __future__ import annotations

import pytest
import torch

from tests.tiny_models import DPO_FAMILIES, build_tiny_in_memory

pytestmark = pytest.mark.integration


def _rows():
    from PIL import Image

    def turn(role, text, image=False):
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return {"role": role, "content": content}

    return [
        {"images": [Image.new("RGB", (48, 32), (220, 45, 45))],
         "messages": [turn("user", "Describe the image.", image=True), turn("assistant", "There is a red circle.")]},
        {"images": [Image.new("RGB", (32, 64), (45, 185, 70))],
         "messages": [turn("user", "Is there a star in the image?", image=True), turn("assistant", "No."),
                      turn("user", "Is there a circle in the image?"), turn("assistant", "Yes."),
                      turn("user", "Is there a moon in the image?"), turn("assistant", "No.")]},
    ]


@pytest.mark.parametrize("family", DPO_FAMILIES)   # PaliGemma has no chat template
@pytest.mark.parametrize("max_length", [None, 70])
def test_list_mode_masks_give_trls_batch(family, max_length):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from align.sft import ListModeChatTemplate

    _, processor = build_tiny_in_memory(family)
    kwargs = dict(assistant_only_loss=True, max_length=max_length)
    expected = DataCollatorForVisionLanguageModeling(processor=processor, **kwargs)(_rows())
    got = DataCollatorForVisionLanguageModeling(processor=ListModeChatTemplate(processor), **kwargs)(_rows())
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert isinstance(got[key], torch.Tensor), key
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
    # the second row supervises three one-word answers and nothing of the questions
    supervised = expected["labels"][1] != -100
    assert 0 < int(supervised.sum()) < int(expected["attention_mask"][1].sum()) // 2


def test_the_sft_trainer_gets_the_list_mode_collator(tmp_path):
    from types import SimpleNamespace

    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from align.sft import ListModeChatTemplate, fast_assistant_masks

    _, processor = build_tiny_in_memory("llava-clip")
    trainer = SimpleNamespace(data_collator=DataCollatorForVisionLanguageModeling(processor=processor,
                                                                                  assistant_only_loss=True))
    fast_assistant_masks(trainer)
    assert isinstance(trainer.data_collator.processor, ListModeChatTemplate)
    plain = SimpleNamespace(data_collator=DataCollatorForVisionLanguageModeling(processor=processor))
    fast_assistant_masks(plain)   # no masks asked for: nothing to speed up, the processor stays as it was
    assert plain.data_collator.processor is processor
