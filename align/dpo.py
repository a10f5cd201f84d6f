"""Direct preference optimisation of a VLM on hallucination pairs (TRL's DPOTrainer).

    halign dpo --config configs/demo/dpo.yaml [--field value ...]
    accelerate launch --config_file configs/accelerate/zero2.yaml -m align dpo --config FILE
    halign dpo --config FILE --dry-run [--accelerate_config F] [--zero_stage 3 --num_gpus 8 --offload none]

Data: the pairs JSONL of `halign data pairs` (TRL's conversational vision preference layout). Every pair
is checked before training so that `max_length` cannot cut image tokens. The reference is the starting
checkpoint: with LoRA, the same weights with adapters disabled; without, a frozen copy that TRL loads
from the checkpoint folder. `loss_type: [sigmoid, sft]` adds an SFT term on the chosen side (RPO), which
keeps "say less" from being the cheapest way to avoid hallucinating.

Hallucination-aware losses (align/dpo_variants.py): `loss_type: [sigmoid, mdpo_conditional, mdpo_anchor]`
is mDPO (the `image` pairs' corrupted images as the rejected condition), `loss_type: [dense]` is RLHF-V's
dense DPO (corrected segments weighted by `dense_gamma`), `loss_type: [sigmoid, sft_rows]` is RPO with the SFT
term averaged per row (short answers weigh as much as long captions). `precompute_ref_log_probs: true` runs the
reference forward once, with the images, and stores it next to the pairs (align/ref_cache.py): no
reference model is kept during training, and later runs on the same pairs and model reuse the file.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trl import DPOConfig

from align.config import DataFields, ModelFields, cpu_defaults, parse_config
from reward.files import InputError, write_json


@dataclass
class DPOStageConfig(ModelFields, DataFields, DPOConfig):
    """DPO on preference pairs {"images", "prompt", "chosen", "rejected", ...}."""
    mdpo_delta: float = field(default=0.0, metadata={"help": "mdpo_anchor: margin the chosen reward must pass"})
    dense_gamma: float = field(default=5.0, metadata={"help": "dense: weight of corrected-segment tokens (RLHF-V: 5)"})
    ref_logps_dir: str | None = field(
        default=None, metadata={"help": "where precomputed reference log-probs are stored (default: ref_logps/ "
                                        "next to the pairs file)"})

    def __post_init__(self):
        cpu_defaults(self)
        super().__post_init__()
        from align.dpo_variants import check_loss_types
        check_loss_types(self.loss_type, getattr(self, "config_path", None))
        if self.truncation_mode == "keep_end" and self.max_length is not None:
            # TRL refuses it for vision data only after loading the model; the images sit in the prompt, so
            # cutting from the start would drop image tokens
            raise InputError("truncation_mode keep_end would cut the image tokens at the start of the prompt",
                             file=getattr(self, "config_path", None),
                             fix="use truncation_mode: keep_start (rows that do not fit are refused or dropped "
                                 "before training: check_image_tokens / drop_long_samples)")


def load_dpo_dataset(cfg, processor):
    """The pairs as a Dataset with the columns the losses need; `ds.kept_rows` = their line numbers (0-based)."""
    from align.lengths import filter_by_length, row_lengths
    from data_prep.pairs import load_pairs_dataset

    if not cfg.dataset:
        raise InputError("no dataset given", file=getattr(cfg, "config_path", None),
                         fix="set `dataset:` to a pairs JSONL from `halign data pairs`")
    ds = load_pairs_dataset(cfg.dataset, cfg.images_dir)
    if cfg.max_samples:
        ds = ds.select(range(min(cfg.max_samples, len(ds))))
    kept_rows = list(range(len(ds)))
    corrupted = "mdpo_conditional" in cfg.loss_type and "rejected_images" in ds.column_names
    if not corrupted:
        _warn_unused_image_pairs(ds, cfg)
    if cfg.check_image_tokens and cfg.max_length is not None:
        rows = list(ds.select_columns(["images", "prompt", "chosen", "rejected"] +
                                      (["rejected_images"] if corrupted else [])))

        def lengths_of(side, images):
            return row_lengths(rows, processor, sizes_of=lambda r: [im.size for im in (r[images] or r["images"])],
                               texts_of=lambda r: processor.apply_chat_template(r["prompt"] + r[side],
                                                                                tokenize=False))
        # every sequence the step builds: chosen and rejected with the image, and for mDPO the chosen text
        # with the corrupted image (a crop may change its size, so its image-token count)
        sides = [lengths_of("chosen", "images"), lengths_of("rejected", "images")]
        if corrupted:
            sides.append(lengths_of("chosen", "rejected_images"))
        keep = filter_by_length([max(n) for n in zip(*sides)], cfg.max_length, drop=cfg.drop_long_samples,
                                where=cfg.dataset)
        if len(keep) < len(ds):
            ds = ds.select(keep)
            kept_rows = keep
    # TRL's collator takes the image, prompt, chosen and rejected columns; halign's losses add the corrupted
    # images (mDPO) and segment marks (dense); other provenance stays in the file.
    columns = ["images", "prompt", "chosen", "rejected"] + (["rejected_images"] if corrupted else [])
    if "dense" in cfg.loss_type:
        columns += [c for c in ("chosen_segments", "rejected_segments") if c in ds.column_names]
    ds = ds.select_columns(columns)
    ds.kept_rows = kept_rows
    return ds


def _warn_unused_image_pairs(ds, cfg) -> None:
    """The `image` strategy's pairs prefer a caption with the real image to the same caption with a corrupted
    one (`rejected_images`). Only mDPO's `mdpo_conditional` reads that image: under every other loss both
    sides are the same text on the same image, so such a pair teaches nothing beyond its sft term."""
    import datasets

    if "rejected_images" not in ds.column_names:
        return
    paths = ds.select_columns(["rejected_images"]).cast_column(
        "rejected_images", datasets.Sequence(datasets.Image(decode=False)))["rejected_images"]   # no decoding
    n = sum(1 for images in paths if images)
    if n:
        print(f"halign: warning: {cfg.dataset}: {n} of {len(ds)} pairs are `image`-strategy pairs (a corrupted "
              f"rejected image), and loss_type {list(cfg.loss_type)} sees both sides of each as the same text on "
              f"the same image: add mdpo_conditional (mDPO) to loss_type, or mine without the image strategy",
              file=sys.stderr)


def reference_cache(cfg, dataset, processor):
    """Where the precomputed reference log-probs of this run live (align/ref_cache.py), or None."""
    from align.ref_cache import default_cache, reference_key

    if not cfg.precompute_ref_log_probs:
        return None
    from datasets import Image, List

    paths = dataset.select_columns([c for c in ("images", "rejected_images") if c in dataset.column_names])
    for column in paths.column_names:
        paths = paths.cast_column(column, List(Image(decode=False)))
    images = sorted({im["path"] for row in paths for column in row.values() for im in column or []})
    settings = {"max_length": cfg.max_length, "loss_type": sorted(set(cfg.loss_type) & {"mdpo_conditional", "dense"}),
                "dense_gamma": cfg.dense_gamma if "dense" in cfg.loss_type else None,
                "images_dir": cfg.images_dir, "dtype": cfg.model_dtype, "bf16": cfg.bf16, "fp16": cfg.fp16}
    key = reference_key(pairs_file=cfg.dataset, kept_rows=dataset.kept_rows, image_paths=images,
                        model_name_or_path=cfg.model_name_or_path,
                        chat_template=getattr(processor, "chat_template", None), settings=settings)
    return default_cache(cfg.dataset, key, cfg.ref_logps_dir)


def run_dpo(cfg) -> dict:
    from align.dpo_variants import HallucinationDPOTrainer
    from align.modeling import print_parameter_report
    from align.sft import last_checkpoint, prepare_model, save_final

    t0 = time.time()
    model, processor, peft_config = prepare_model(cfg, stage="dpo")
    dataset = load_dpo_dataset(cfg, processor)
    trainer = HallucinationDPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=dataset,
                                      processing_class=processor, peft_config=peft_config,
                                      ref_cache=reference_cache(cfg, dataset, processor))
    from align.distributed import check_data_parallel
    processes = check_data_parallel(trainer)
    report = print_parameter_report(trainer.model, "dpo")
    resume = last_checkpoint(cfg.output_dir) if cfg.resume else None
    result = trainer.train(resume_from_checkpoint=resume)
    out = save_final(trainer, processor, Path(cfg.output_dir) / "model")
    logs = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
    metrics = {"train_loss": round(result.training_loss, 4), "steps": result.global_step, "pairs": len(dataset),
               "final_reward_accuracy": logs[-1]["rewards/accuracies"] if logs else None,
               "final_reward_margin": logs[-1].get("rewards/margins") if logs else None,
               "loss_type": list(cfg.loss_type), "reference_precompute_seconds":
                   round(getattr(trainer, "ref_precompute_seconds", 0.0), 2) if cfg.precompute_ref_log_probs else None,
               "resumed_from": resume, "seconds": round(time.time() - t0, 1), "parameters": report, **processes,
               "model": str(out), "log_history": trainer.state.log_history}
    if trainer.accelerator.is_main_process:
        write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    return metrics


def main(argv: list[str]) -> int:
    from align.sft import is_main_rank

    from align.dryrun import dry_run, split_dry_run_args

    argv, dry = split_dry_run_args(argv)
    cfg = parse_config(DPOStageConfig, argv, "dpo")
    if dry is not None:   # the model from its config.json on the meta device: counts and memory, no weights
        dry_run(cfg, "dpo", dry)
        return 0
    metrics = run_dpo(cfg)
    if is_main_rank():
        print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}), file=sys.stdout)
    return 0
