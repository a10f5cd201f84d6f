"""Supervised fine-tuning of a VLM on conversation rows with images (TRL's SFTTrainer).

    halign sft --config configs/demo/sft.yaml [--field value ...]
    accelerate launch --config_file configs/accelerate/zero2.yaml -m align sft --config FILE
    halign sft --config FILE --dry-run [--accelerate_config F] [--zero_stage 3 --num_gpus 8 --offload none]

The config is TRL's SFTConfig plus halign's model/data fields (align/config.py). Before training every
row is checked so that `max_length` cannot cut image tokens. The final model is saved to
`output_dir/model` (renamed into place when complete); checkpoints go to `output_dir/checkpoint-N` and
`--resume true` continues from the last one.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trl import SFTConfig

from align.config import DataFields, ModelFields, cpu_defaults, parse_config
from reward.files import InputError, write_json


@dataclass
class SFTStageConfig(ModelFields, DataFields, SFTConfig):
    """Supervised fine-tuning on conversation rows {"images": [...], "messages": [...]}."""

    def __post_init__(self):
        cpu_defaults(self)
        super().__post_init__()


def prepare_model(cfg, stage: str | None = None):
    """Load, freeze by part, and build the LoRA config: the common start of every training stage.

    With `stage`, a family that cannot run it is refused before any weight is read (align/families.py)."""
    from align.families import check_stage_support, model_type_of
    from align.modeling import apply_freezing, load_model_and_processor, lora_config

    if stage is not None and cfg.model_name_or_path:
        check_stage_support(model_type_of(cfg.model_name_or_path, cfg.trust_remote_code) or "", stage,
                            cfg.model_name_or_path)
    model, processor = load_model_and_processor(cfg)
    apply_freezing(model, cfg)
    peft_config = lora_config(model, cfg) if cfg.use_peft else None
    return model, processor, peft_config


def load_sft_dataset(cfg, processor):
    from align.lengths import filter_by_length, row_lengths
    from data_prep.conversations import decode_images, image_sizes, load_conversations

    if not cfg.dataset:
        raise InputError("no dataset given", file=getattr(cfg, "config_path", None),
                         fix="set `dataset:` to a JSONL of conversation rows")
    ds = load_conversations(cfg.dataset, cfg.images_dir, cfg.max_samples, decode=False)
    grouped = getattr(cfg, "train_sampling_strategy", None) == "group_by_length"
    if grouped or (cfg.check_image_tokens and cfg.max_length is not None):
        lengths = row_lengths(ds, processor,
                              texts_of=lambda r: processor.apply_chat_template(r["messages"], tokenize=False),
                              sizes_of=lambda r: image_sizes(r["images"]))
        keep = filter_by_length(lengths, cfg.max_length if cfg.check_image_tokens else None,
                                drop=cfg.drop_long_samples, where=cfg.dataset)
        if len(keep) < len(ds):
            ds = ds.select(keep)
        if grouped:
            # transformers' LengthGroupedSampler reads lengths from this column; without it, it would look
            # for input_ids, which a vision dataset (tokenized in the collator) does not have
            ds = ds.add_column(cfg.length_column_name, [lengths[i] for i in keep])
    return decode_images(ds)


# The file a checkpoint writer saves last: the Trainer's state (after weights, optimizer and RNG), or
# halign PPO's state (its checkpoints are renamed into place when complete anyway).
CHECKPOINT_DONE = ("trainer_state.json", "ppo_state.json")


def last_checkpoint(output_dir: str) -> str | None:
    """The newest COMPLETE checkpoint-N. transformers' get_last_checkpoint takes the highest N, but the
    Trainer writes into checkpoint-N directly, so a job killed mid-save leaves a half-written newest one
    that resume would then fail on; skip those (their last file is missing or unreadable)."""
    import json

    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    numbered = [(int(p.name.split("-")[1]), p) for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
                if p.is_dir() and p.name.split("-")[1].isdigit()]
    for _, ckpt in sorted(numbered, reverse=True):
        for name in CHECKPOINT_DONE:
            try:
                json.loads((ckpt / name).read_text())
                return str(ckpt)
            except (OSError, ValueError):
                continue
    return None


def save_final(trainer, processor, out: Path) -> Path:
    """The trained model (adapter only for LoRA) + processor, written to a temp folder then renamed.

    Every rank calls `save_model` (under ZeRO-3 it gathers the shards); only the main process writes, into
    a folder name all ranks agree on, and renames it into place once complete."""
    import shutil

    out = Path(out)
    tmp = out.with_name(f".{out.name}.saving")
    main = trainer.accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    if main:
        processor.save_pretrained(tmp)
        # the Trainer pickles its arguments next to the weights; a model folder needs none of it, and
        # halign never unpickles what it is handed
        (tmp / "training_args.bin").unlink(missing_ok=True)
        if out.is_dir():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    trainer.accelerator.wait_for_everyone()
    return out


class ListModeChatTemplate:
    """The processor, except that `apply_chat_template` tokenizes into lists and tensorizes at the end.

    With `return_assistant_tokens_mask`, transformers (5.x `_adjust_assistant_masks_indices`) walks every
    token of a `pt` offset mapping once per assistant turn, unbinding tensors one element at a time: with
    TRL's SFT collator that was ~0.09 s of a 0.26 s step on the demo (7 turns x ~170 tokens x 16 rows).
    On lists the same walk takes ~0.009 s; the batch that comes out is identical (tests/test_sft_collation.py).
    A batch that cannot be tensorized from lists falls back to the processor's own path."""

    def __init__(self, processor):
        self._processor = processor

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def apply_chat_template(self, *args, return_tensors=None, **kwargs):
        from transformers import BatchFeature

        if not (return_tensors and kwargs.get("return_assistant_tokens_mask") and kwargs.get("tokenize")):
            return self._processor.apply_chat_template(*args, return_tensors=return_tensors, **kwargs)
        try:
            out = self._processor.apply_chat_template(*args, return_tensors=None, **kwargs)
            return BatchFeature(dict(out), tensor_type=return_tensors)
        except (ValueError, TypeError):   # e.g. ragged image features: let the processor tensorize them
            return self._processor.apply_chat_template(*args, return_tensors=return_tensors, **kwargs)


def fast_assistant_masks(trainer) -> None:
    """Give TRL's vision SFT collator the list-mode processor (see ListModeChatTemplate)."""
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = trainer.data_collator
    if isinstance(collator, DataCollatorForVisionLanguageModeling) and collator.assistant_only_loss:
        collator.processor = ListModeChatTemplate(collator.processor)


def weighted_sft_trainer():
    """TRL's SFTTrainer, plus rows' optional `weight`: each row's supervised tokens count `weight` times.

    TRL 1.16 has no per-sample loss weights. The collator carries the dataset's `weight` column as a
    `row_weights` tensor, and a forward hook scales the per-token log-probabilities of TRL's fused LM head
    row by row, so the loss stays TRL's own token mean (same normalizer) and its logged entropy and
    accuracy stay unweighted."""
    import torch
    from trl import SFTTrainer

    class WeightedSFTTrainer(SFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            # refused before the first step: the hook below scales the fused head's log-probs, which only
            # TRL's plain token loss sums
            if self.compute_loss_func is not None or self.label_smoother is not None or \
                    self.args.loss_type != "nll":
                raise InputError("row weights work with SFT's plain token loss only",
                                 fix="leave `loss_type: nll` and `label_smoothing_factor: 0`, or drop the "
                                     "rows' 'weight' fields")
            inner = self.data_collator

            def collate(examples):
                weights = [float(ex.pop("weight", 1.0)) for ex in examples]
                batch = inner(examples)
                batch["row_weights"] = torch.tensor(weights)
                return batch
            self.data_collator = collate

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("row_weights", None)
            if weights is None or bool((weights == 1).all()):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

            def scale(module, args, kwargs, output):
                if getattr(output, "log_probs", None) is not None:   # the fused head's (rows, tokens)
                    output.log_probs = output.log_probs * weights.to(output.log_probs)[:, None]
                return output
            hook = self.model.register_forward_hook(scale, with_kwargs=True)
            try:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                hook.remove()

    return WeightedSFTTrainer


def is_main_rank() -> bool:
    import os
    return os.environ.get("RANK", "0") == "0"


def run_sft(cfg) -> dict:
    from trl import SFTTrainer

    from align.modeling import print_parameter_report

    t0 = time.time()
    model, processor, peft_config = prepare_model(cfg, stage="sft")
    dataset = load_sft_dataset(cfg, processor)
    weighted = "weight" in dataset.column_names
    if weighted or cfg.length_column_name in dataset.column_names:
        # the Trainer drops columns outside TRL's list (messages, images, ...): the length-grouped sampler
        # would find no lengths, the collator no row weights; the rows hold nothing else, so keep them all
        cfg.remove_unused_columns = False
    trainer_class = weighted_sft_trainer() if weighted else SFTTrainer
    trainer = trainer_class(model=model, args=cfg, train_dataset=dataset, processing_class=processor,
                            peft_config=peft_config)
    fast_assistant_masks(trainer)
    from align.distributed import check_data_parallel
    processes = check_data_parallel(trainer)
    report = print_parameter_report(trainer.model, "sft")
    resume = last_checkpoint(cfg.output_dir) if cfg.resume else None
    result = trainer.train(resume_from_checkpoint=resume)
    out = save_final(trainer, processor, Path(cfg.output_dir) / "model")
    metrics = {"train_loss": round(result.training_loss, 4), "steps": result.global_step,
               "rows": len(dataset), "resumed_from": resume, "seconds": round(time.time() - t0, 1),
               "parameters": report, **processes, "model": str(out)}
    if trainer.accelerator.is_main_process:
        write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    return metrics


def main(argv: list[str]) -> int:
    from align.dryrun import dry_run, split_dry_run_args

    argv, dry = split_dry_run_args(argv)
    cfg = parse_config(SFTStageConfig, argv, "sft")
    if dry is not None:   # the model from its config.json on the meta device: counts and memory, no weights
        dry_run(cfg, "sft", dry)
        return 0
    metrics = run_sft(cfg)
    if is_main_rank():
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}), file=sys.stdout)
    return 0
