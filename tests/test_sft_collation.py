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


def test_row_weights_scale_each_rows_token_loss(tmp_path):
    """A row's `weight` multiplies its supervised tokens' losses; the normalizer stays TRL's token count.
    The expected loss is computed here from the model's plain logits, not through the trainer."""
    from datasets import Dataset
    from trl import SFTConfig

    from align.sft import weighted_sft_trainer

    model, processor = build_tiny_in_memory("llava-clip")
    rows = _rows()
    dataset = Dataset.from_list([{**r, "weight": w} for r, w in zip(rows, (1.0, 3.0))])
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, report_to="none", use_cpu=True,
                     remove_unused_columns=False, max_length=None)
    trainer = weighted_sft_trainer()(model=model, args=args, train_dataset=dataset, processing_class=processor)
    batch = trainer.data_collator([{**r, "weight": w} for r, w in zip(_rows(), (1.0, 3.0))])
    assert batch["row_weights"].tolist() == [1.0, 3.0]

    model.eval()
    with torch.no_grad():
        plain = {k: v for k, v in batch.items() if k not in ("labels", "row_weights")}
        logits = model(**plain).logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        token_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0),
                                                       reduction="none") * (labels != -100)
        weighted = (token_loss.sum(1) * torch.tensor([1.0, 3.0])).sum() / (labels != -100).sum()
        unweighted = token_loss.sum() / (labels != -100).sum()
        got = trainer.compute_loss(model, dict(batch))
        got_plain = trainer.compute_loss(model, {**batch, "row_weights": torch.ones(2)})
    assert torch.isclose(got, weighted, rtol=1e-4), (got, weighted)
    assert torch.isclose(got_plain, unweighted, rtol=1e-4), (got_plain, unweighted)
    assert not torch.isclose(weighted, unweighted, rtol=1e-2)


def test_row_weights_with_another_sft_loss_are_refused_before_training(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig

    from align.sft import weighted_sft_trainer
    from reward.files import InputError

    model, processor = build_tiny_in_memory("llava-clip")
    dataset = Dataset.from_list([{**r, "weight": 2.0} for r in _rows()])
    args = SFTConfig(output_dir=str(tmp_path), assistant_only_loss=True, report_to="none", use_cpu=True,
                     remove_unused_columns=False, max_length=None, loss_type="dft")
    with pytest.raises(InputError, match="plain token loss"):
        weighted_sft_trainer()(model=model, args=args, train_dataset=dataset, processing_class=processor)


def test_a_bad_row_weight_names_the_line(tmp_path):
    import json

    from PIL import Image

    from data_prep.conversations import load_conversations
    from reward.files import InputError

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    row = {"images": ["a.png"], "messages": [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A star."}]}]}
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(row) + "\n" + json.dumps({**row, "weight": 2}) + "\n")
    assert load_conversations(good, tmp_path, decode=False)["weight"] == [1.0, 2.0]
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps(row) + "\n")
    assert "weight" not in load_conversations(plain, tmp_path, decode=False).column_names
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(row) + "\n" + json.dumps({**row, "weight": -1}) + "\n")
    with pytest.raises(InputError, match="line 2.*weight|weight.*line 2"):
        load_conversations(bad, tmp_path, decode=False)
