"""GRPO with the grounded hallucination reward (TRL's GRPOTrainer): `halign grpo`.

    halign grpo --config configs/demo/grpo.yaml [--field value ...]
    accelerate launch -m align grpo --config FILE

The critic-free counterpart of `halign ppo`, on the same data and the same reward, so the two can be
compared: image prompts joined with their images' grounded objects (align/rl_data.py), each prompt
answered `num_generations` times, every completion scored by reward.grounded.GroundedReward (plus the
optional `extra_reward_function`), advantages relative to the group's mean. `beta` > 0 adds TRL's KL
penalty against the reference (LoRA: adapters disabled; full: TRL loads a frozen copy from
model_name_or_path). The config is TRL's GRPOConfig plus halign's model, data and reward fields. The final
model goes to `output_dir/model`, the per-step log to `output_dir/history.json` and `curves.png`;
`resume: true` continues from the last checkpoint.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from trl import GRPOConfig

from align.config import DataFields, ModelFields, cpu_defaults, parse_config
from align.rl_data import RLFields
from reward.files import atomic_path, write_json


@dataclass
class GRPOStageConfig(ModelFields, DataFields, RLFields, GRPOConfig):
    """GRPO on image prompts {"image_id", "image", "prompt"} scored against grounded annotations."""

    def __post_init__(self):
        cpu_defaults(self)
        super().__post_init__()


def grpo_history(log_history: list[dict]) -> list[dict]:
    """TRL's training log as PPO-style rows (step, reward, kl, ...) for plots and reports."""
    rows = []
    for entry in log_history:
        if "reward" not in entry:
            continue
        row = {"step": entry.get("step"), "reward": entry["reward"], "kl": entry.get("kl", 0.0),
               "reward_std": entry.get("reward_std"), "entropy": entry.get("entropy"),
               "response_length": entry.get("completions/mean_length"),
               "clipfrac": entry.get("clip_ratio/region_mean"), "loss": entry.get("loss")}
        rows.append({k: v for k, v in row.items() if v is not None})
    return rows


def plot_grpo(history: list[dict], png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reward.files import atomic_path

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].plot(steps, [h["reward"] for h in history], label="grounded reward")
    axes[1].plot(steps, [h.get("kl", 0.0) for h in history], label="KL(policy || reference)")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("GRPO")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return png


def run_grpo(cfg) -> dict:
    from trl import GRPOTrainer

    from align.modeling import print_parameter_report
    from align.rl_data import reward_functions, rl_dataset_from_config
    from align.sft import last_checkpoint, prepare_model

    t0 = time.time()
    model, processor, peft_config = prepare_model(cfg)
    dataset = rl_dataset_from_config(cfg)
    fns = reward_functions(cfg, processor)
    if len(fns) > 1 and cfg.reward_weights is None:
        cfg.reward_weights = [w for _, w in fns]
    trainer = GRPOTrainer(model=model, reward_funcs=[f for f, _ in fns], args=cfg, train_dataset=dataset,
                          processing_class=processor, peft_config=peft_config)
    report = print_parameter_report(trainer.model, "grpo")
    resume = last_checkpoint(cfg.output_dir) if cfg.resume else None
    result = trainer.train(resume_from_checkpoint=resume)
    out = Path(cfg.output_dir) / "model"
    with atomic_path(out) as tmp:
        trainer.save_model(str(tmp))
        processor.save_pretrained(tmp)
        # LoRA: TRL writes the adapter only; align.modeling.load_model wants a config.json in every folder.
        if trainer.accelerator.is_main_process and not (tmp / "config.json").exists():
            trainer.accelerator.unwrap_model(trainer.model).config.save_pretrained(tmp)
    history = grpo_history(trainer.state.log_history)
    metrics = {"train_loss": round(result.training_loss, 4), "steps": result.global_step, "prompts": len(dataset),
               "final_reward": history[-1]["reward"] if history else None,
               "final_kl": history[-1].get("kl") if history else None, "resumed_from": resume,
               "seconds": round(time.time() - t0, 1), "parameters": report, "model": str(out)}
    if trainer.accelerator.is_main_process:
        write_json(Path(cfg.output_dir) / "history.json", history)
        if history:
            plot_grpo(history, Path(cfg.output_dir) / "curves.png")
        write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    return metrics


def main(argv: list[str]) -> int:
    cfg = parse_config(GRPOStageConfig, argv, "grpo")
    metrics = run_grpo(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}), file=sys.stdout)
    return 0
