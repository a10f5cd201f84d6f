"""Every family's tiny checkpoint builds offline, saves, and reloads exactly like a hub checkpoint."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.tiny_models import FAMILIES, build_tiny, build_tiny_in_memory

pytestmark = pytest.mark.integration

CONVERSATION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "There is a red circle."}]},
]


def _inputs(family, processor):
    from PIL import Image

    image = Image.new("RGB", (40, 56), (200, 30, 30))
    if family == "paligemma":   # PaliGemma has no chat template: its processor builds prefix + suffix
        return processor(images=[image], text=["Describe the image."], suffix=["There is a red circle."],
                         return_tensors="pt")
    text = processor.apply_chat_template(CONVERSATION, tokenize=False)
    return processor(images=[image], text=[text], return_tensors="pt")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(family, root) for family in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_is_exact(family, checkpoints):
    import torch

    from align.modeling import load_model_and_processor

    model, processor = build_tiny_in_memory(family)
    loaded, loaded_processor = load_model_and_processor(SimpleNamespace(
        model_name_or_path=str(checkpoints[family]), trust_remote_code=False, model_dtype="auto"))
    assert type(loaded) is type(model)
    assert type(loaded_processor) is type(processor)
    inputs = _inputs(family, loaded_processor)
    assert torch.equal(inputs["input_ids"], _inputs(family, processor)["input_ids"])
    assert int((inputs["input_ids"] == loaded.config.image_token_id).sum()) > 0
    model.eval(), loaded.eval()
    with torch.no_grad():
        expected, got = model(**inputs).logits, loaded(**inputs).logits
    assert torch.isfinite(got).all()
    assert torch.equal(expected, got)


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "smolvlm"])
def test_image_only_processors_save_under_the_hub_class_name(family, checkpoints):
    """Saved files name transformers' own class, so the checkpoint loads without halign (with torchvision)."""
    expected = {"qwen2-vl": "Qwen2VLProcessor", "qwen2.5-vl": "Qwen2_5_VLProcessor",
                "smolvlm": "SmolVLMProcessor"}[family]
    saved = json.loads((checkpoints[family] / "processor_config.json").read_text())
    assert saved["processor_class"] == expected
    assert not hasattr(build_tiny_in_memory(family)[1], "video_processor")


def test_auto_processor_finds_the_image_only_class_when_files_name_none(checkpoints, tmp_path):
    """Checkpoints whose files name no processor class resolve through the AutoProcessor registration."""
    import shutil

    from transformers import AutoProcessor

    import align.families  # noqa: F401  (registers the image-only classes)

    folder = tmp_path / "unnamed"
    shutil.copytree(checkpoints["qwen2-vl"], folder)
    for name in ("processor_config.json", "tokenizer_config.json"):
        data = json.loads((folder / name).read_text())
        data.pop("processor_class", None)
        (folder / name).write_text(json.dumps(data))
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor).__qualname__ == "ImageOnlyQwen2VLProcessor"


def test_image_token_count_depends_on_size_where_the_family_says_so(checkpoints):
    """Qwen2-VL resizes to multiples of 16 px, Idefics3 tiles large images; LLaVA is fixed."""
    from PIL import Image

    from align.modeling import load_processor

    def count(family, size):
        processor = load_processor(str(checkpoints[family]))
        text = processor.apply_chat_template(CONVERSATION[:1], tokenize=False, add_generation_prompt=True)
        ids = processor(images=[Image.new("RGB", size)], text=[text], return_tensors="pt")["input_ids"][0]
        return int((ids == processor.image_token_id).sum())

    # Qwen2-VL: 16x16 px -> 2x2 patches of 8 px -> 1 token after the 2x2 merge; 64x64 -> 8x8 -> 16
    assert count("qwen2-vl", (16, 16)) == 1
    assert count("qwen2-vl", (64, 64)) == 16
    # Idefics3 resizes the longest edge to 64 px, then tiles by 32 px plus a global view, 4 tokens each:
    # square -> 2x2 tiles + 1 = 5 views = 20 tokens; 2:1 -> 2x1 tiles + 1 = 3 views = 12 tokens
    assert count("idefics3", (32, 32)) == count("idefics3", (200, 200)) == 20
    assert count("idefics3", (64, 32)) == count("smolvlm", (20, 100)) == 12
    assert count("llava-clip", (16, 16)) == count("llava-clip", (64, 64)) == 16
