"""SFT and DPO (full and LoRA) take real steps on a tiny model of every family, in this one process.

Also: the image-token length check is exact per family (against TRL's own collators), PaliGemma is refused
before any weight is read, mDPO/dense DPO train on every family, the precomputed reference (with images)
gives the same steps as the live reference and is reused, and `resume: true` continues from a checkpoint.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.tiny_data import build_world
from tests.tiny_models import DPO_FAMILIES, build_tiny

pytestmark = pytest.mark.integration

HALLUCINATION_LOSSES = ["sigmoid", "mdpo_conditional", "mdpo_anchor", "dense"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {family: build_tiny(family, root) for family in DPO_FAMILIES + ("paligemma",)}


def stage_config(stage: str, tmp_path: Path, model: Path, dataset: Path, **fields):
    """The stage's config as `halign <stage> --config FILE --field value ...` would parse it."""
    from align.config import parse_config
    from align.dpo import DPOStageConfig
    from align.sft import SFTStageConfig

    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / f"{stage}.yaml"
    config.write_text("report_to: none\nlogging_steps: 1\nsave_strategy: \"no\"\nmax_length: 1024\n")
    values = dict(model_name_or_path=model, dataset=dataset, output_dir=tmp_path / "out", max_steps=2,
                  per_device_train_batch_size=2, learning_rate=1e-3)
    values.update(fields)
    argv = ["--config", str(config)]
    for key, value in values.items():
        argv += [f"--{key}"] + ([str(v) for v in value] if isinstance(value, list) else [str(value)])
    return parse_config({"sft": SFTStageConfig, "dpo": DPOStageConfig}[stage], argv, stage)


def _check_saved(metrics: dict, use_peft: bool) -> None:
    from types import SimpleNamespace

    from align.modeling import load_model_and_processor

    assert math.isfinite(metrics["train_loss"])
    out = Path(metrics["model"])
    assert (out / ("adapter_model.safetensors" if use_peft else "model.safetensors")).is_file()
    model, processor = load_model_and_processor(SimpleNamespace(model_name_or_path=str(out),
                                                                trust_remote_code=False, model_dtype="auto"))
    assert hasattr(processor, "image_processor")
    trainable = metrics["parameters"]["language"]["trainable"]
    total = metrics["parameters"]["language"]["total"]
    # LoRA trains adapters only (a few % of the language model), full fine-tuning all of it
    assert (0 < trainable < total) if use_peft else trainable == total


# ------------------------------------------------------------------------------------------ lengths
@pytest.mark.parametrize("family", DPO_FAMILIES)
def test_length_check_matches_trl_collators(family, world, checkpoints):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from align.lengths import row_lengths
    from align.modeling import load_processor
    from data_prep.conversations import load_conversations
    from data_prep.pairs import load_pairs_dataset

    processor = load_processor(str(checkpoints[family]))
    pairs = list(load_pairs_dataset(world["pairs"]).select_columns(["images", "prompt", "chosen", "rejected"]))
    collate = DataCollatorForVisionPreference(processor=processor)
    for side, row in (("chosen", 0), ("rejected", 1)):
        predicted = row_lengths(pairs, processor, sizes_of=lambda r: [im.size for im in r["images"]],
                                texts_of=lambda r: processor.apply_chat_template(r["prompt"] + r[side],
                                                                                 tokenize=False))
        actual = [int(collate([dict(p)])["attention_mask"][row].sum()) for p in pairs]
        assert predicted == actual, side
    rows = list(load_conversations(world["sft"]))
    predicted = row_lengths(rows, processor, sizes_of=lambda r: [im.size for im in r["images"]],
                            texts_of=lambda r: processor.apply_chat_template(r["messages"], tokenize=False))
    sft_collate = DataCollatorForVisionLanguageModeling(processor=processor)
    assert predicted == [int(sft_collate([dict(r)])["attention_mask"].sum()) for r in rows]
    assert len(set(predicted)) > 1   # the rows differ in length (captions, and image sizes for Qwen/Idefics)


def test_rows_that_do_not_fit_are_refused_or_dropped(world, checkpoints, tmp_path):
    from align.dpo import load_dpo_dataset
    from align.modeling import load_processor
    from reward.files import InputError

    processor = load_processor(str(checkpoints["qwen2-vl"]))
    cfg = stage_config("dpo", tmp_path, checkpoints["qwen2-vl"], world["pairs"], max_length=40)
    with pytest.raises(InputError, match="longer than max_length=40"):
        load_dpo_dataset(cfg, processor)
    cfg = stage_config("dpo", tmp_path, checkpoints["qwen2-vl"], world["pairs"], max_length=40,
                       drop_long_samples=True)
    kept = load_dpo_dataset(cfg, processor)
    assert 0 < len(kept) < 12 and len(kept.kept_rows) == len(kept)


def test_keep_end_truncation_is_refused_up_front(world, checkpoints, tmp_path):
    from reward.files import InputError

    with pytest.raises(InputError, match="keep_end would cut the image tokens"):
        stage_config("dpo", tmp_path, checkpoints["llava-clip"], world["pairs"], truncation_mode="keep_end")


# ------------------------------------------------------------------------------------ SFT and DPO
@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("family", DPO_FAMILIES)
def test_sft_and_dpo_train_every_family(family, use_peft, world, checkpoints, tmp_path):
    from align.dpo import run_dpo
    from align.sft import run_sft

    sft = run_sft(stage_config("sft", tmp_path / "sft", checkpoints[family], world["sft"], use_peft=use_peft,
                               assistant_only_loss=True))
    assert sft["steps"] == 2
    _check_saved(sft, use_peft)
    dpo = run_dpo(stage_config("dpo", tmp_path / "dpo", checkpoints[family], world["pairs"], use_peft=use_peft))
    assert dpo["steps"] == 2
    _check_saved(dpo, use_peft)


@pytest.mark.parametrize("family", ["llava-clip", "qwen2-vl"])
def test_sft_groups_rows_by_their_exact_lengths(family, world, checkpoints, tmp_path):
    """train_sampling_strategy: group_by_length works on image rows (transformers alone finds no lengths
    there): each row's length column is what the collator really builds, and training runs on it."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from align.modeling import load_processor
    from align.sft import load_sft_dataset, run_sft

    cfg = stage_config("sft", tmp_path / "sft", checkpoints[family], world["sft"], assistant_only_loss=True,
                       train_sampling_strategy="group_by_length", max_steps=3)
    processor = load_processor(str(checkpoints[family]))
    rows = load_sft_dataset(cfg, processor)
    collate = DataCollatorForVisionLanguageModeling(processor=processor)
    actual = [int(collate([{k: r[k] for k in ("images", "messages")}])["attention_mask"].sum()) for r in rows]
    assert rows["length"] == actual and len(set(actual)) > 1
    metrics = run_sft(cfg)
    assert metrics["steps"] == 3 and math.isfinite(metrics["train_loss"])


@pytest.mark.parametrize("use_peft", [False, True], ids=["full", "lora"])
def test_sft_row_weights_reach_the_loss(use_peft, world, checkpoints, tmp_path):
    """`halign sft` on rows that all weigh 3: Adam without clipping takes the very same steps (its update
    ignores the loss's scale), so the logged loss is exactly 3x the unweighted run's. A run that dropped the
    weights would log the same loss."""
    import json

    from align.sft import run_sft

    weighted = tmp_path / "weighted.jsonl"
    weighted.write_text("".join(json.dumps({**json.loads(line), "weight": 3}) + "\n"
                                for line in Path(world["sft"]).read_text().splitlines() if line.strip()))
    common = dict(use_peft=use_peft, assistant_only_loss=True, max_grad_norm=0, images_dir=Path(world["sft"]).parent)
    plain = run_sft(stage_config("sft", tmp_path / "plain", checkpoints["llava-clip"], world["sft"], **common))
    heavy = run_sft(stage_config("sft", tmp_path / "heavy", checkpoints["llava-clip"], weighted, **common))
    assert heavy["steps"] == plain["steps"] == 2
    assert heavy["train_loss"] == pytest.approx(3 * plain["train_loss"], rel=1e-3)


@pytest.mark.parametrize("family", DPO_FAMILIES)
def test_hallucination_losses_train_every_family(family, world, checkpoints, tmp_path):
    from align.dpo import run_dpo

    metrics = run_dpo(stage_config("dpo", tmp_path, checkpoints[family], world["pairs"], use_peft=True,
                                   loss_type=HALLUCINATION_LOSSES, per_device_train_batch_size=4, max_steps=3))
    assert math.isfinite(metrics["train_loss"]) and metrics["steps"] == 3
    history = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert history["loss_type"] == HALLUCINATION_LOSSES


def test_sft_rows_trains_beside_trl_sigmoid(world, checkpoints, tmp_path):
    """`sft_rows` (the SFT term averaged per row, not per token) runs through halign's loss with full
    fine-tuning and TRL's reference copy, and logs its term every step."""
    from align.dpo import run_dpo

    metrics = run_dpo(stage_config("dpo", tmp_path, checkpoints["llava-clip"], world["pairs"],
                                   loss_type=["sigmoid", "sft_rows"], loss_weights=[0.62, 1.0],
                                   per_device_train_batch_size=4, max_steps=3))
    logged = [h["loss/sft_rows"] for h in metrics["log_history"] if "loss/sft_rows" in h]
    assert len(logged) == 3 and all(math.isfinite(x) and x > 0 for x in logged)
    assert metrics["loss_type"] == ["sigmoid", "sft_rows"]


def test_paligemma_is_refused_before_loading(world, checkpoints, tmp_path):
    from align.dpo import run_dpo
    from align.sft import run_sft
    from reward.files import InputError

    (checkpoints["paligemma"] / "model.safetensors").rename(tmp_path / "weights-moved-away")
    try:
        with pytest.raises(InputError, match="dpo is not supported for paligemma: PaliGemma is a prefix-LM"):
            run_dpo(stage_config("dpo", tmp_path, checkpoints["paligemma"], world["pairs"]))
        with pytest.raises(InputError, match="sft is not supported for paligemma"):
            run_sft(stage_config("sft", tmp_path, checkpoints["paligemma"], world["sft"]))
    finally:
        (tmp_path / "weights-moved-away").rename(checkpoints["paligemma"] / "model.safetensors")


# ------------------------------------------------------------------------------ reference precompute
@pytest.mark.parametrize("use_peft,losses", [(False, HALLUCINATION_LOSSES), (True, HALLUCINATION_LOSSES),
                                             (False, ["sigmoid", "sft"])], ids=["full", "lora", "trl-losses"])
def test_precomputed_reference_gives_the_live_reference_steps(use_peft, losses, world, checkpoints, tmp_path):
    """Same seed, same batches: the loss of every step is the same with the reference precomputed (with
    images, corrupted images and dense weights) as with the live reference; a second run reads the file.
    With TRL's own loss types, TRL's loss code reads the precomputed columns."""
    from align.dpo import run_dpo

    def run(name, **fields):
        cfg = stage_config("dpo", tmp_path / name, checkpoints["qwen2-vl"], world["pairs"], use_peft=use_peft,
                           loss_type=losses, per_device_train_batch_size=4, max_steps=3,
                           ref_logps_dir=tmp_path / "ref", **fields)
        metrics = run_dpo(cfg)
        return metrics, [h["loss"] for h in metrics["log_history"] if "loss" in h]

    live, live_losses = run("live")
    first, first_losses = run("precomputed", precompute_ref_log_probs=True)
    cached, cached_losses = run("cached", precompute_ref_log_probs=True)
    assert len(live_losses) == 3 and live_losses[1] != live_losses[0]
    assert first_losses == pytest.approx(live_losses, rel=1e-4)
    assert cached_losses == pytest.approx(live_losses, rel=1e-4)
    assert first["reference_precompute_seconds"] > 0 and cached["reference_precompute_seconds"] == 0
    assert len(list((tmp_path / "ref").glob("pairs-train-*.json"))) == 1


# ------------------------------------------------------------------------------- compact rehearsal rows
@pytest.mark.parametrize("family,losses", [("qwen2-vl", ["sigmoid", "sft"]), ("llava-clip", ["sigmoid", "sft"]),
                                           ("qwen2-vl", HALLUCINATION_LOSSES), ("llava-clip", ["sigmoid", "sft_rows"])],
                         ids=["qwen2-vl-trl", "llava-clip-trl", "qwen2-vl-mdpo-dense", "llava-clip-sft-rows"])
def test_compact_rehearsal_rows_give_the_full_batchs_steps(family, losses, world, checkpoints, tmp_path, monkeypatch):
    """Pairs with equal texts (here the `image` strategy's) keep only their chosen row. With TRL's [sigmoid,
    sft], loss and gradient norm of every step are TRL's own on the full batch; with halign's loss types
    (mDPO, dense, sft_rows: their sigmoid and dense terms skip such pairs) they are halign's on the full batch."""
    from align import dpo_objective
    from align.dpo import run_dpo
    from align.dpo_variants import HallucinationDPOTrainer

    rows_seen = []
    loss_fn = "rehearsal_compact_loss" if set(losses) <= {"sigmoid", "sft"} else "halign_loss"
    real = getattr(dpo_objective, loss_fn)

    def spy(trainer, model, inputs, return_outputs):
        rows_seen.append((inputs["input_ids"].size(0), int(inputs["text_pair_mask"].sum()),
                          inputs["text_pair_mask"].numel()))
        return real(trainer, model, inputs, return_outputs)

    def run(name):
        metrics = run_dpo(stage_config("dpo", tmp_path / name, checkpoints[family], world["pairs"],
                                       loss_type=losses, loss_weights=[1.0] + [0.5] * (len(losses) - 1),
                                       per_device_train_batch_size=4, max_steps=3))
        return [(h["loss"], h["grad_norm"]) for h in metrics["log_history"] if "loss" in h]

    monkeypatch.setattr(dpo_objective, loss_fn, spy)
    compact, compact_rows = run("compact"), list(rows_seen)
    monkeypatch.setattr(HallucinationDPOTrainer, "_compacts_rehearsal", lambda self, types: False)
    full = run("full")
    assert compact_rows and all(rows == n + kept for rows, kept, n in compact_rows)
    assert any(kept < n for _, kept, n in compact_rows)   # some batches were compact
    assert len(full) == 3 and full[1] != full[0]
    assert [x for step in compact for x in step] == pytest.approx([x for step in full for x in step], rel=1e-4)


@pytest.mark.parametrize("family", ["qwen2-vl", "idefics3", "llava-clip"])
def test_compact_batch_holds_trls_rows(family, checkpoints):
    """The compact batch's rows are TRL's rows (tokens, masks, pixels) for [chosen 0, chosen 1, rejected 0]."""
    from PIL import Image

    from align.dpo_variants import HallucinationPreferenceCollator
    from align.modeling import load_processor

    processor = load_processor(str(checkpoints[family]))
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]

    def answer(text):
        return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]

    examples = [{"images": [Image.new("RGB", (48, 32), (250, 20, 20))], "prompt": prompt,
                 "chosen": answer("A red circle."), "rejected": answer("A red circle and a blue star.")},
                {"images": [Image.new("RGB", (48, 32), (20, 20, 250))], "prompt": prompt,
                 "chosen": answer("Yes."), "rejected": answer("Yes.")}]
    trl_batch = HallucinationPreferenceCollator(processor)(examples)
    compact = HallucinationPreferenceCollator(processor, compact_rehearsal=True)(examples)
    assert trl_batch["input_ids"].size(0) == 4 and compact["input_ids"].size(0) == 3
    assert compact["text_pair_mask"].tolist() == [True, False]
    for row, trl_row in ((0, 0), (1, 1), (2, 2)):
        for key in ("input_ids", "completion_mask"):
            ours = compact[key][row][compact["attention_mask"][row].bool()]
            theirs = trl_batch[key][trl_row][trl_batch["attention_mask"][trl_row].bool()]
            assert ours.tolist() == theirs.tolist(), (key, row)
    pixels, trl_pixels = compact["pixel_values"], trl_batch["pixel_values"]
    assert pixels.shape[1:] == trl_pixels.shape[1:] and pixels.shape[0] < trl_pixels.shape[0]
    assert torch_equal(pixels, trl_pixels[:pixels.shape[0]])
    # mDPO's corrupted branch (every pair's chosen text) and dense weights follow the same rows
    full = HallucinationPreferenceCollator(processor, corrupted=True, dense_gamma=5.0)(examples)
    ours = HallucinationPreferenceCollator(processor, corrupted=True, dense_gamma=5.0, compact_rehearsal=True)(examples)
    assert ours["input_ids"].size(0) == 3 and ours["dense_weights"].shape == ours["input_ids"].shape
    for row in range(3):
        weights = ours["dense_weights"][row][ours["attention_mask"][row].bool()]
        assert weights.tolist() == full["dense_weights"][row][full["attention_mask"][row].bool()].tolist(), row
    assert ours["dense_weights"][2].max() == 5.0                # the rejected side's inserted "and a blue star"
    assert torch_equal(ours["corrupted_input_ids"], full["corrupted_input_ids"])
    assert torch_equal(ours["corrupted_pixel_values"], full["corrupted_pixel_values"])
    # every pair a text pair: TRL's own batch, unchanged
    examples[1]["rejected"] = answer("No.")
    assert torch_equal(HallucinationPreferenceCollator(processor, compact_rehearsal=True)(examples)["input_ids"],
                       HallucinationPreferenceCollator(processor)(examples)["input_ids"])


# --------------------------------------------------------------------------------------------- resume
def test_resume_continues_from_the_last_checkpoint(world, checkpoints, tmp_path):
    from align.dpo import run_dpo

    fields = dict(save_strategy="steps", save_steps=2, use_peft=True)
    first = run_dpo(stage_config("dpo", tmp_path, checkpoints["llava-clip"], world["pairs"], max_steps=4, **fields))
    assert first["steps"] == 4 and (tmp_path / "out" / "checkpoint-4").is_dir()
    second = run_dpo(stage_config("dpo", tmp_path, checkpoints["llava-clip"], world["pairs"], max_steps=6,
                                  resume=True, **fields))
    assert second["resumed_from"].endswith("checkpoint-4")
    assert second["steps"] == 6
    steps = [h["step"] for h in second["log_history"] if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]   # the state (with its history) came from the checkpoint


# ---------------------------------------------------------------------------------------- the collator
@pytest.mark.parametrize("family", ["qwen2-vl", "idefics3", "llava-clip"])
def test_collator_marks_dense_segments_and_builds_the_corrupted_branch(family, world, checkpoints):
    from PIL import Image

    from align.dpo_variants import HallucinationPreferenceCollator
    from align.modeling import load_processor

    processor = load_processor(str(checkpoints[family]))
    image = Image.new("RGB", (48, 32), (250, 20, 20))
    corrupted = Image.new("RGB", (48, 32), (0, 0, 0))
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    chosen_text, rejected_text = "A red circle.", "A red circle and a blue star."
    examples = [
        {"images": [image], "prompt": prompt, "rejected_images": [corrupted],
         "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen_text}]}],
         "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected_text}]}],
         # explicit marks (character spans of the message text): "red" on the chosen side
         "chosen_segments": [[2, 5]], "rejected_segments": None},
        {"images": [image], "prompt": prompt, "rejected_images": [],
         "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen_text}]}],
         "rejected": [{"role": "assistant", "content": [{"type": "text", "text": chosen_text}]}]},
    ]
    collate = HallucinationPreferenceCollator(processor, corrupted=True, dense_gamma=5.0)
    batch = collate(examples)
    assert batch["text_pair_mask"].tolist() == [True, False]
    tok = processor.tokenizer

    def weighted_text(row):
        ids = batch["input_ids"][row][batch["dense_weights"][row] == 5.0]
        return tok.decode(ids).strip()

    assert weighted_text(0) == "red"                        # the explicit mark
    assert weighted_text(2) == ""                           # rejected side: no mark given, none derived
    assert (batch["dense_weights"][0] > 0).sum() == batch["completion_mask"][0].sum()
    # the corrupted branch: the chosen text, token for token, under the corrupted image
    main = batch["input_ids"][0][batch["completion_mask"][0].bool()]
    side = batch["corrupted_input_ids"][0][batch["corrupted_completion_mask"][0].bool()]
    assert main.tolist() == side.tolist()
    assert not torch_equal(batch["pixel_values"], batch["corrupted_pixel_values"])
    # without marks the word difference is used: "and a blue star" on the rejected side
    del examples[0]["chosen_segments"], examples[0]["rejected_segments"]
    batch = collate(examples)
    assert weighted_text(2) == "and a blue star"


def torch_equal(a, b) -> bool:
    import torch
    return a.shape == b.shape and bool(torch.equal(a, b))
