"""PPO for vision-language models with the grounded hallucination reward: `halign ppo`.

    halign ppo --config configs/demo/ppo.yaml [--field value ...]
    accelerate launch -m align ppo --config FILE          (data-parallel: each process rolls out its share)

TRL dropped PPO after 1.12 and never fed it images, so this stage is written here, on accelerate, peft and
TRL's token utilities. One PPO step:
1. Rollout: `rollout_batch_size` image prompts per process are answered by the policy (sampling at
   `temperature`, batched with the KV cache). Each response ends at its first end-of-sequence token.
2. Score: the response text (special and image tokens stripped) is scored by reward.grounded.GroundedReward
   against the objects annotated in the prompt's image, plus, optionally, any TRL-style reward function
   (`extra_reward_function`, e.g. a learned reward model's score) times `extra_reward_weight`.
3. One no-grad forward of the policy gives the sampled tokens' log-probabilities and the value head's
   estimates; one of the reference gives the reference log-probabilities. The reference is the starting
   checkpoint: with LoRA the same weights with the adapters disabled, without LoRA a frozen copy.
4. Per-token rewards = -kl_coef * KL_t, plus the score on the last token; GAE advantages (whitened) and
   returns (align/ppo_math.py).
5. `num_ppo_epochs` passes over the rollout in `num_mini_batches` shuffled minibatches (micro-batches of
   `per_device_train_batch_size`, gradients accumulated by accelerate): clipped policy loss +
   vf_coef * clipped value loss. Then the KL coefficient adapts towards `target_kl` (if set).
The value head is a linear layer on the policy's last hidden state (shared backbone, as in Ziegler et al.
and TRL's former value-head models); it trains with the policy and is saved next to the model.

Logged every step (console every `logging_steps`, TensorBoard etc. through `report_to`, all of it in
`output_dir/history.json`; `output_dir/curves.png` plots reward, hallucination and KL): reward, KL, KL
coefficient, entropy, clip fractions, value loss, response length. Checkpoints (`checkpoint-N`, every
`save_steps`) hold the policy, value head, optimizer, scheduler, RNG and KL state; `resume: true` continues
from the last one. The final policy is saved to `output_dir/model` (adapter only with LoRA), loadable
like every other checkpoint of halign.
"""
from __future__ import annotations

import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from align.config import DataFields, ModelFields, cpu_defaults, parse_config
from align.ppo_math import (KLController, gae, kl_per_token, masked_mean, masked_whiten, policy_loss,
                            token_rewards, value_loss)
from align.rl_data import RLFields
from reward.files import atomic_path, write_json


@dataclass
class PPOStageConfig(ModelFields, DataFields, RLFields, TrainingArguments):
    """PPO on image prompts {"image_id", "image", "prompt"} scored against grounded annotations."""
    rollout_batch_size: int = field(default=32, metadata={"help": "prompts rolled out per process per PPO step"})
    num_ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout batch"})
    num_mini_batches: int = field(default=1, metadata={"help": "optimizer steps per PPO epoch"})
    max_new_tokens: int = field(default=48, metadata={"help": "longest response"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (log-probs use it too)"})
    kl_coef: float = field(default=0.05, metadata={"help": "initial weight of the per-token KL penalty"})
    target_kl: float | None = field(default=None, metadata={
        "help": "adapt kl_coef towards this KL per response (None: fixed coefficient)"})
    kl_horizon: int = field(default=10000, metadata={"help": "adaptive KL horizon in samples"})
    kl_estimator: str = field(default="k1", metadata={"help": "k1, k2 or k3 (ppo_math.kl_per_token)"})
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = field(default=0.2, metadata={"help": "policy ratio clip"})
    cliprange_value: float = field(default=0.2, metadata={"help": "value clip around the rollout's values"})
    vf_coef: float = field(default=0.1, metadata={"help": "weight of the value loss"})
    entropy_coef: float = field(default=0.0, metadata={"help": "weight of an entropy bonus (0: none)"})
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = field(default=None, metadata={
        "help": "subtracted from the score of a response cut by max_new_tokens"})
    value_learning_rate: float | None = field(default=None, metadata={"help": "value head lr (None: learning_rate)"})

    def __post_init__(self):
        cpu_defaults(self)
        if self.output_dir is None:
            self.output_dir = "runs/ppo"
        super().__post_init__()
        micro = self.per_device_train_batch_size
        if self.rollout_batch_size % self.num_mini_batches or (self.rollout_batch_size // self.num_mini_batches) % micro:
            raise ValueError(f"rollout_batch_size ({self.rollout_batch_size}) must split into num_mini_batches "
                             f"({self.num_mini_batches}) minibatches of a multiple of per_device_train_batch_size "
                             f"({micro})")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_estimator must be k1, k2 or k3, not {self.kl_estimator!r}")


class PolicyWithValueHead(torch.nn.Module):
    """The VLM plus a scalar value per position from its last hidden state: one forward gives both."""

    def __init__(self, policy, hidden_size: int):
        super().__init__()
        self.policy = policy
        self.value_head = torch.nn.Linear(hidden_size, 1)
        # A near-zero start: early value errors are the returns themselves, not noise from a random head.
        torch.nn.init.normal_(self.value_head.weight, std=1.0 / math.sqrt(hidden_size + 1) * 0.1)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, logits_to_keep: int = 0, **inputs):
        out = self.policy(**inputs, output_hidden_states=True, use_cache=False, logits_to_keep=logits_to_keep)
        hidden = out.hidden_states[-1]
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return out.logits, self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)


# ------------------------------------------------------------------------------------------ batches
def select_rows(inputs: dict, rows: torch.Tensor) -> dict:
    """The processor outputs of some rows. Families that flatten image patches over the batch (Qwen2-VL:
    pixel_values is (patches, dim) with image_grid_thw giving each image's patch count) are split per image;
    every row holds exactly one image here."""
    out = {k: v[rows] for k, v in inputs.items() if k not in ("pixel_values", "image_grid_thw")}
    if "image_grid_thw" in inputs:
        counts = inputs["image_grid_thw"].prod(-1).tolist()
        chunks = torch.split(inputs["pixel_values"], counts)
        out["pixel_values"] = torch.cat([chunks[i] for i in rows.tolist()])
        out["image_grid_thw"] = inputs["image_grid_thw"][rows]
    elif "pixel_values" in inputs:
        out["pixel_values"] = inputs["pixel_values"][rows]
    return out


def response_mask(responses: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """1 for the response tokens up to and including the first stop token, 0 for what follows (padding)."""
    is_stop = torch.isin(responses, torch.tensor(stop_ids, device=responses.device))
    after_stop = (is_stop.long().cumsum(1) - is_stop.long()) > 0
    return (~after_stop).long()


def batch_indices(n: int, step: int, global_batch: int, seed: int) -> list[int]:
    """Dataset rows of PPO step `step` (0-based): consecutive slices of one shuffled order per epoch,
    so a resumed run draws exactly the prompts the uninterrupted run would have."""
    import numpy as np

    out, pos = [], step * global_batch
    while len(out) < global_batch:
        epoch, offset = divmod(pos, n)
        order = np.random.RandomState(seed + epoch).permutation(n)
        take = order[offset:offset + global_batch - len(out)].tolist()
        out += take
        pos += len(take)
    return out


def response_forward(model, inputs: dict, responses: torch.Tensor, temperature: float, suppressed: list[int]):
    """Log-probabilities of the response tokens, their logits and the values of the states before them.

    `suppressed` tokens (image placeholders) are never sampled, so they are masked here as well: the
    log-probabilities are those of the distribution the rollout really sampled from."""
    from trl.trainer.utils import selective_log_softmax

    length = responses.shape[1]
    ids = torch.cat([inputs["input_ids"], responses], 1)
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(responses)], 1)
    prompt_shape = inputs["input_ids"].shape
    extra = {}
    for key, value in inputs.items():
        if key in ("input_ids", "attention_mask"):
            continue
        if value.dim() == 2 and value.shape == prompt_shape:
            # per-token fields (Qwen2-VL's mm_token_type_ids, token_type_ids): response tokens are text, type 0
            value = torch.cat([value, torch.zeros_like(responses, dtype=value.dtype)], 1)
        extra[key] = value
    # logits_to_keep: only the positions that predict response tokens go through the LM head.
    logits, values = model(input_ids=ids, attention_mask=mask, logits_to_keep=length + 1, **extra)
    logits = logits[:, :-1].float() / temperature
    if suppressed:   # a large finite value, not -inf: the entropy's p * log p must stay 0, not nan
        logits[..., suppressed] = -1e9
    return selective_log_softmax(logits, responses), logits, values[:, :-1].float()


def suppressed_tokens(model, processor) -> list[int]:
    """Image/video placeholder ids: sampling one would ask the model for image features it does not have."""
    config = model.config
    names = ("image_token_id", "image_token_index", "video_token_id", "vision_start_token_id",
             "vision_end_token_id", "vision_token_id")
    ids = {getattr(config, n, None) for n in names} | {getattr(processor, "image_token_id", None)}
    vocab = config.get_text_config().vocab_size
    return sorted(i for i in ids if isinstance(i, int) and 0 <= i < vocab)


# ------------------------------------------------------------------------------------------ rollout
@torch.no_grad()
def rollout(cfg, accelerator, model, ref_policy, processor, rows: list[dict], reward_fns) -> dict:
    """Generate, score, and compute everything PPO needs from the old policy and the reference."""
    from reward.grounded import response_stats

    policy = accelerator.unwrap_model(model).policy
    tok = processor.tokenizer
    tok.padding_side = "left"   # generation continues every prompt from its last token
    texts = [processor.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    images = [[im.convert("RGB") for im in r["images"]] for r in rows]
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt").to(accelerator.device)
    stop_ids = sorted({tok.eos_token_id} | set(_as_list(policy.generation_config.eos_token_id)))
    policy.eval()
    suppressed = suppressed_tokens(policy, processor)
    out = policy.generate(**inputs, do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                          max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=stop_ids,
                          suppress_tokens=suppressed or None)
    responses = out[:, inputs["input_ids"].shape[1]:]
    mask = response_mask(responses, stop_ids)
    responses = responses.masked_fill(mask == 0, tok.pad_token_id)
    completions = tok.batch_decode(responses, skip_special_tokens=True)
    columns = {"objects": [r["objects"] for r in rows], "prompts": [r["prompt"] for r in rows],
               "images": [r["images"] for r in rows], "image_id": [r["image_id"] for r in rows]}
    parts = [torch.tensor(fn(completions, **columns), dtype=torch.float32) for fn, _ in reward_fns]
    scores = sum(weight * part for (_, weight), part in zip(reward_fns, parts))
    ended = torch.isin(responses, torch.tensor(stop_ids, device=responses.device)).any(1).cpu()
    if cfg.missing_eos_penalty is not None:
        scores[~ended] -= cfg.missing_eos_penalty
    grounded = reward_fns[0][0]
    stats = [response_stats(grounded.clean(c), o, grounded.vocab) for c, o in zip(completions, columns["objects"])]

    logprobs, ref_logprobs, values = [], [], []
    chunk = cfg.per_device_eval_batch_size
    model.eval()
    for start in range(0, len(rows), chunk):
        sub = torch.arange(start, min(start + chunk, len(rows)))
        sub_inputs, sub_resp = select_rows(inputs, sub), responses[sub]
        lp, _, v = response_forward(model, sub_inputs, sub_resp, cfg.temperature, suppressed)
        logprobs.append(lp)
        values.append(v)
        if ref_policy is None:   # LoRA: the reference is the same weights without the adapters
            with policy.disable_adapter():
                ref_lp, _, _ = response_forward(model, sub_inputs, sub_resp, cfg.temperature, suppressed)
        else:
            ref_lp, _, _ = response_forward(ref_policy, sub_inputs, sub_resp, cfg.temperature, suppressed)
        ref_logprobs.append(ref_lp)
    model.train()
    return {"inputs": inputs, "responses": responses, "mask": mask.float(), "logprobs": torch.cat(logprobs),
            "ref_logprobs": torch.cat(ref_logprobs), "values": torch.cat(values),
            "scores": scores.to(accelerator.device), "ended": ended, "completions": completions, "stats": stats,
            "suppressed": suppressed, "grounded_reward": parts[0].mean()}


class ReferenceModel(torch.nn.Module):
    """A frozen copy of the starting policy, called like PolicyWithValueHead (values are zeros)."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy.requires_grad_(False).eval()

    def forward(self, logits_to_keep: int = 0, **inputs):
        logits = self.policy(**inputs, use_cache=False, logits_to_keep=logits_to_keep).logits
        return logits, torch.zeros(logits.shape[:2], device=logits.device)


def _as_list(x) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


# ------------------------------------------------------------------------------------------ training
def ppo_update(cfg, accelerator, model, optimizer, scheduler, batch: dict, generator) -> dict:
    """num_ppo_epochs passes of clipped policy + value loss over one rollout batch."""
    from trl.trainer.utils import entropy_from_logits

    n = batch["responses"].shape[0]
    mini = n // cfg.num_mini_batches
    micro = cfg.per_device_train_batch_size
    log: dict[str, list] = {k: [] for k in ("policy_loss", "value_loss", "clipfrac", "value_clipfrac",
                                            "approxkl", "entropy", "ratio")}
    for _ in range(cfg.num_ppo_epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, mini):
            for m in range(start, start + mini, micro):
                rows = order[m:m + micro].to(batch["responses"].device)
                mask = batch["mask"][rows]
                with accelerator.accumulate(model):
                    logprobs, logits, values = response_forward(model, select_rows(batch["inputs"], rows),
                                                                batch["responses"][rows], cfg.temperature,
                                                                batch["suppressed"])
                    pg, pg_stats = policy_loss(logprobs, batch["logprobs"][rows], batch["advantages"][rows], mask,
                                               cfg.cliprange)
                    vf, vf_stats = value_loss(values, batch["values"][rows], batch["returns"][rows], mask,
                                              cfg.cliprange_value)
                    with torch.set_grad_enabled(cfg.entropy_coef > 0):
                        entropy = masked_mean(entropy_from_logits(logits), mask)
                    loss = pg + cfg.vf_coef * vf - cfg.entropy_coef * entropy
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        if cfg.max_grad_norm:
                            accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad()
                for key, value in (("policy_loss", pg), ("value_loss", vf), ("clipfrac", pg_stats["clipfrac"]),
                                   ("value_clipfrac", vf_stats["clipfrac"]), ("approxkl", pg_stats["approxkl"]),
                                   ("entropy", entropy), ("ratio", pg_stats["ratio"])):
                    log[key].append(value.detach())
    return {k: torch.stack(v).mean() for k, v in log.items()}


def step_metrics(accelerator, batch: dict, kl: torch.Tensor, kl_coef: float, update: dict) -> dict:
    """Means over the rollout of every process."""
    stats = batch["stats"]
    local = {
        "reward": batch["scores"].mean(),
        "grounded_reward": batch["grounded_reward"],
        "kl": kl.sum(1).mean(),
        "non_score_reward": (-kl_coef * kl).sum(1).mean(),
        "response_length": batch["mask"].sum(1).mean(),
        "ended": batch["ended"].float().mean(),
        "hallucination_rate": torch.tensor(sum(s["has_hallucination"] for s in stats) / len(stats)),
        "coverage": torch.tensor(sum(s["coverage"] for s in stats) / len(stats)),
        "mentions": torch.tensor(sum(s["n_mentions"] for s in stats) / len(stats)),
        **update,
    }
    keys = sorted(local)
    values = torch.stack([local[k].float().to(accelerator.device) for k in keys])
    values = accelerator.reduce(values, reduction="mean")
    return {k: round(v, 5) for k, v in zip(keys, values.tolist())}


def build(cfg, accelerator):
    """Policy (+ LoRA) with its value head, the reference, optimizer and scheduler."""
    import copy

    from peft import PeftModel, get_peft_model
    from trl.trainer.utils import disable_dropout_in_model

    from align.modeling import apply_freezing, load_model_and_processor, lora_config, print_parameter_report

    policy, processor = load_model_and_processor(cfg)
    if isinstance(policy, PeftModel):   # a LoRA checkpoint: start from its merged weights
        policy = policy.merge_and_unload()
    # Dropout would make the log-probabilities of the rollout and of the update disagree at ratio 1.
    disable_dropout_in_model(policy)
    apply_freezing(policy, cfg)
    ref = None
    if cfg.use_peft:
        policy = get_peft_model(policy, lora_config(policy, cfg))
    else:
        ref = ReferenceModel(copy.deepcopy(policy)).to(accelerator.device)
    if cfg.gradient_checkpointing:
        policy.gradient_checkpointing_enable()
    model = PolicyWithValueHead(policy, policy.config.get_text_config().hidden_size)
    report = print_parameter_report(policy, "ppo")
    value_lr = cfg.value_learning_rate or cfg.learning_rate
    groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": cfg.learning_rate},
              {"params": list(model.value_head.parameters()), "lr": value_lr}]
    optimizer = torch.optim.AdamW(groups, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon,
                                  weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    return model, ref, processor, optimizer, report


def save_checkpoint(cfg, accelerator, step: int, kl_ctl: KLController, history: list) -> None:
    """checkpoint-N: accelerate's state (model + value head, optimizer, scheduler, RNG) and the PPO state."""
    out = Path(cfg.output_dir) / f"checkpoint-{step}"
    tmp = out.with_name(out.name + ".tmp")
    # safetensors refuses tied weights (LM head = embeddings) in a flat state dict: torch format here.
    accelerator.save_state(str(tmp), safe_serialization=False)
    if accelerator.is_main_process:
        write_json(tmp / "ppo_state.json", {"step": step, "kl": kl_ctl.state_dict(), "history": history})
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        if cfg.save_total_limit:
            ckpts = sorted(Path(cfg.output_dir).glob("checkpoint-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
            for old in ckpts[:-cfg.save_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()


def run_ppo(cfg) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import is_tensorboard_available
    from tqdm.auto import tqdm
    from transformers import get_scheduler, set_seed

    from align.rl_data import reward_functions, rl_dataset_from_config
    from align.sft import last_checkpoint

    t0 = time.time()
    set_seed(cfg.seed)
    trackers = [t for t in cfg.report_to if t != "none"]
    if "tensorboard" in trackers and not is_tensorboard_available():
        print("[ppo] report_to tensorboard needs the tensorboard package (pip install tensorboard); "
              "logging to the console and history.json only", file=sys.stderr)
    micro_per_mini = cfg.rollout_batch_size // cfg.num_mini_batches // cfg.per_device_train_batch_size
    accelerator = Accelerator(cpu=cfg.use_cpu, mixed_precision="bf16" if cfg.bf16 else "no",
                              gradient_accumulation_steps=micro_per_mini, log_with=trackers or None,
                              project_dir=str(Path(cfg.output_dir) / "runs"))
    model, ref, processor, optimizer, report = build(cfg, accelerator)
    dataset = rl_dataset_from_config(cfg)
    reward_fns = reward_functions(cfg, processor)

    global_batch = cfg.rollout_batch_size * accelerator.num_processes
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.num_train_epochs * len(dataset) / global_batch)
    n_updates = total_steps * cfg.num_ppo_epochs * cfg.num_mini_batches
    scheduler = get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.get_warmup_steps(n_updates),
                              num_training_steps=n_updates, scheduler_specific_kwargs=cfg.lr_scheduler_kwargs or {})
    accelerator.register_for_checkpointing(scheduler)
    kl_ctl = KLController(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon)
    start, history = 0, []
    resume = last_checkpoint(cfg.output_dir) if cfg.resume else None
    if resume:
        accelerator.load_state(resume)
        state = json.loads((Path(resume) / "ppo_state.json").read_text())
        start, history = state["step"], state["history"]
        kl_ctl.load_state_dict(state["kl"])
    if trackers:
        accelerator.init_trackers("ppo", config={k: v for k, v in cfg.to_dict().items()
                                                 if isinstance(v, (int, float, str, bool))})
    rank_rows = slice(accelerator.process_index * cfg.rollout_batch_size,
                      (accelerator.process_index + 1) * cfg.rollout_batch_size)

    bar = tqdm(range(start, total_steps), desc="ppo", unit="step", disable=not accelerator.is_main_process,
               initial=start, total=total_steps)
    for step in bar:
        t_step = time.time()
        idx = batch_indices(len(dataset), step, global_batch, cfg.seed)[rank_rows]
        batch = rollout(cfg, accelerator, model, ref, processor, [dataset[i] for i in idx], reward_fns)
        t_rollout = time.time() - t_step
        kl = kl_per_token(batch["logprobs"], batch["ref_logprobs"], cfg.kl_estimator) * batch["mask"]
        rewards = token_rewards(batch["scores"], kl, batch["mask"], kl_ctl.value)
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, batch["mask"], shift_mean=False)
        advantages, batch["returns"] = gae(rewards, batch["values"], batch["mask"], cfg.gamma, cfg.lam)
        batch["advantages"] = masked_whiten(advantages, batch["mask"])
        # Minibatch order seeded per step and process, so that a resumed run shuffles as the first one did.
        generator = torch.Generator().manual_seed(cfg.seed + 7919 * accelerator.process_index + step)
        update = ppo_update(cfg, accelerator, model, optimizer, scheduler, batch, generator)
        metrics = step_metrics(accelerator, batch, kl, kl_ctl.value, update)
        metrics.update(step=step + 1, kl_coef=round(kl_ctl.value, 6), lr=scheduler.get_last_lr()[0],
                       rollout_s=round(t_rollout, 2), step_s=round(time.time() - t_step, 2))
        kl_ctl.update(metrics["kl"], global_batch)
        history.append(metrics)
        if trackers:
            accelerator.log(metrics, step=step + 1)
        if accelerator.is_main_process:
            bar.set_postfix(reward=metrics["reward"], kl=metrics["kl"], hal=metrics["hallucination_rate"])
            if cfg.logging_steps and (step + 1) % max(1, int(cfg.logging_steps)) == 0:
                bar.write(_console_line(metrics))
            write_json(Path(cfg.output_dir) / "history.json", history)
        if cfg.save_steps and (step + 1) % max(1, int(cfg.save_steps)) == 0 and step + 1 < total_steps:
            save_checkpoint(cfg, accelerator, step + 1, kl_ctl, history)
    bar.close()

    out = Path(cfg.output_dir) / "model"
    accelerator.wait_for_everyone()
    metrics = {"steps": total_steps, "prompts": len(dataset), "processes": accelerator.num_processes,
               "resumed_from": resume,
               "seconds": round(time.time() - t0, 1), "parameters": report, "model": str(out),
               "final": history[-1] if history else None}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        with atomic_path(out) as tmp:
            unwrapped.policy.save_pretrained(tmp)
            processor.save_pretrained(tmp)
            # LoRA: peft writes the adapter only; align.modeling.load_model wants a config.json in every
            # checkpoint folder (it then finds adapter_config.json and loads the base + adapter).
            if not (tmp / "config.json").exists():
                unwrapped.policy.config.save_pretrained(tmp)
        torch.save(unwrapped.value_head.state_dict(), Path(cfg.output_dir) / "value_head.pt")
        if history:
            plot_history(history, Path(cfg.output_dir) / "curves.png")
        write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    accelerator.wait_for_everyone()
    accelerator.end_training()   # closes the trackers (and the process group): last
    return metrics


def _console_line(m: dict) -> str:
    return (f"[ppo] step {m['step']}: reward {m['reward']:+.3f}  hallucinating {m['hallucination_rate']:.2f}  "
            f"coverage {m['coverage']:.2f}  kl {m['kl']:.3f} (coef {m['kl_coef']:.4f})  entropy {m['entropy']:.3f}  "
            f"clipfrac {m['clipfrac']:.3f}  value loss {m['value_loss']:.4f}  length {m['response_length']:.1f}  "
            f"{m['step_s']:.1f}s")


def plot_history(history: list[dict], png: Path, title: str = "PPO") -> Path:
    """Reward, hallucination rate / coverage and KL per step, one panel each, written to a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(steps, [h["reward"] for h in history], label="grounded reward")
    axes[0].plot(steps, [h["reward"] + h["non_score_reward"] for h in history], label="reward - KL penalty")
    axes[1].plot(steps, [h["hallucination_rate"] for h in history], label="responses hallucinating")
    axes[1].plot(steps, [h["coverage"] for h in history], label="object coverage")
    axes[2].plot(steps, [h["kl"] for h in history], label="KL(policy || reference) per response")
    for ax in axes:
        ax.set_xlabel("PPO step")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return png


def main(argv: list[str]) -> int:
    cfg = parse_config(PPOStageConfig, argv, "ppo")
    metrics = run_ppo(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}), file=sys.stdout)
    return 0
