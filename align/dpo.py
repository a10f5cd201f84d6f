"""Direct preference optimisation of a VLM on hallucination pairs (TRL's DPOTrainer).

    halign dpo --config configs/demo/dpo.yaml [--field value ...]
    accelerate launch --config_file configs/accelerate/zero2.yaml -m align dpo --config FILE

Data: the pairs JSONL of `halign data pairs` (TRL's conversational vision preference layout). Every pair
is checked before training so that `max_length` cannot cut image tokens. The reference is the starting
checkpoint: with LoRA, the same weights with adapters disabled; without, a frozen copy that TRL loads
from the checkpoint folder. `loss_type: [sigmoid, sft]` adds an SFT term on the chosen side (RPO), which
keeps "say less" from being the cheapest way to avoid hallucinating.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trl import DPOConfig

from align.config import DataFields, ModelFields, cpu_defaults, parse_config
from reward.files import InputError, write_json


@dataclass
class DPOStageConfig(ModelFields, DataFields, DPOConfig):
    """DPO on preference pairs {"images", "prompt", "chosen", "rejected", ...}."""

    def __post_init__(self):
        cpu_defaults(self)
        super().__post_init__()


def load_dpo_dataset(cfg, processor):
    from align.lengths import filter_by_length, row_lengths
    from data_prep.pairs import load_pairs_dataset

    if not cfg.dataset:
        raise InputError("no dataset given", file=getattr(cfg, "config_path", None),
                         fix="set `dataset:` to a pairs JSONL from `halign data pairs`")
    ds = load_pairs_dataset(cfg.dataset, cfg.images_dir)
    if cfg.max_samples:
        ds = ds.select(range(min(cfg.max_samples, len(ds))))
    if cfg.check_image_tokens and cfg.max_length is not None:
        rows = list(ds.select_columns(["images", "prompt", "chosen", "rejected"]))
        sizes_of = lambda r: [im.size for im in r["images"]]  # noqa: E731
        lengths = [max(pair) for pair in zip(*(
            row_lengths(rows, processor, sizes_of=sizes_of,
                        texts_of=lambda r, side=side: processor.apply_chat_template(r["prompt"] + r[side],
                                                                                    tokenize=False))
            for side in ("chosen", "rejected")))]
        keep = filter_by_length(lengths, cfg.max_length, drop=cfg.drop_long_samples, where=cfg.dataset)
        if len(keep) < len(ds):
            ds = ds.select(keep)
    # TRL's collator takes the image, prompt, chosen and rejected columns; provenance stays in the file.
    return ds.select_columns(["images", "prompt", "chosen", "rejected"])


def run_dpo(cfg) -> dict:
    from trl import DPOTrainer

    from align.modeling import print_parameter_report
    from align.sft import last_checkpoint, prepare_model, save_final

    t0 = time.time()
    model, processor, peft_config = prepare_model(cfg)
    dataset = load_dpo_dataset(cfg, processor)
    trainer = DPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=dataset,
                         processing_class=processor, peft_config=peft_config)
    report = print_parameter_report(trainer.model, "dpo")
    resume = last_checkpoint(cfg.output_dir) if cfg.resume else None
    result = trainer.train(resume_from_checkpoint=resume)
    out = save_final(trainer, processor, Path(cfg.output_dir) / "model")
    logs = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
    metrics = {"train_loss": round(result.training_loss, 4), "steps": result.global_step, "pairs": len(dataset),
               "final_reward_accuracy": logs[-1]["rewards/accuracies"] if logs else None,
               "final_reward_margin": logs[-1].get("rewards/margins") if logs else None,
               "resumed_from": resume, "seconds": round(time.time() - t0, 1), "parameters": report,
               "model": str(out)}
    write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    return metrics


def main(argv: list[str]) -> int:
    cfg = parse_config(DPOStageConfig, argv, "dpo")
    metrics = run_dpo(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}), file=sys.stdout)
    return 0
