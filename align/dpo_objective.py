"""One training step's loss for halign's loss types (see align/dpo_variants.py and align/dpo_losses.py).

Forwards: the policy on TRL's batch [chosen..., rejected...] (real image; or the compact batch, whose pairs
with equal texts keep only their chosen row: no term reads their rejected row), and, for `mdpo_conditional`,
on the chosen text with the corrupted image. Reference values come from the batch (precomputed columns)
or from live reference forwards on the same inputs. Every forward runs on every step whatever the batch
holds, so that all ranks run the same collectives under DeepSpeed ZeRO-3.

Also TRL's own `sigmoid` / `sft` on a compact batch (`rehearsal_compact_loss`): pairs with equal texts keep
only their chosen row, with TRL's loss and gradient unchanged.
"""
from __future__ import annotations

import torch

from align.dpo_losses import (anchor_loss, conditional_image_loss, masked_mean, sigmoid_loss,
                              weighted_sequence_logps)
from align.dpo_variants import BATCH_EXTRAS, CORRUPTED, split_sides


def halign_loss(trainer, model, inputs: dict, return_outputs: bool):
    mode = "train" if trainer.model.training else "eval"
    beta = trainer.beta
    main = {k: v for k, v in inputs.items() if k not in BATCH_EXTRAS and not k.startswith(CORRUPTED)}
    per_token = trainer._per_token_logps(model, main)
    text_pairs = inputs["text_pair_mask"]
    n = text_pairs.numel()           # pairs; the batch holds n chosen rows, then n or fewer rejected rows
    chosen_logps, rejected_logps = split_sides(per_token.sum(dim=1), text_pairs)
    types = trainer.loss_types
    corrupted_side = {k[len(CORRUPTED):]: v for k, v in inputs.items() if k.startswith(CORRUPTED)}
    corrupted_logps = trainer._per_token_logps(model, corrupted_side).sum(dim=1) if corrupted_side else None

    if trainer.precompute_ref_logps:
        ref = {k: v for k, v in inputs.items() if k.startswith("ref_")}
        if "ref_chosen_logps" not in ref:
            raise RuntimeError("precompute_ref_log_probs is set but the batch carries no reference columns")
    else:
        _require_live_reference(trainer)
        ref = trainer.reference_values(inputs)
    chosen_lr = chosen_logps - ref["ref_chosen_logps"]
    rejected_lr = rejected_logps - ref["ref_rejected_logps"]

    chosen_tokens, chosen_mask = per_token[:n], main["completion_mask"][:n, 1:]
    loss, terms = 0.0, {}
    for loss_type, weight in zip(types, trainer.loss_weights, strict=True):
        if loss_type == "sigmoid":
            term = masked_mean(sigmoid_loss(beta, chosen_lr, rejected_lr), text_pairs)
        elif loss_type == "sft":
            term = -chosen_tokens[chosen_mask.bool()].mean()
        elif loss_type == "sft_rows":   # each row's token mean (the mask as weights), then the mean of the rows
            term = -weighted_sequence_logps(chosen_tokens, chosen_mask.to(chosen_tokens.dtype)).mean()
        elif loss_type == "mdpo_conditional":
            corrupted_lr = corrupted_logps - ref["ref_corrupted_logps"]
            term = conditional_image_loss(beta, chosen_lr, corrupted_lr).mean()
        elif loss_type == "mdpo_anchor":
            term = anchor_loss(beta, chosen_lr, getattr(trainer.args, "mdpo_delta", 0.0)).mean()
        elif loss_type == "dense":
            weights = inputs["dense_weights"][:, 1:].to(per_token.dtype)
            dense_c, dense_r = split_sides(weighted_sequence_logps(per_token, weights), text_pairs)
            term = masked_mean(sigmoid_loss(beta, dense_c - ref["ref_chosen_dense_logps"],
                                            dense_r - ref["ref_rejected_dense_logps"]), text_pairs)
        else:   # check_loss_types refused it at construction
            raise ValueError(f"loss type {loss_type!r} is not computed by halign")
        terms[loss_type] = term.detach()
        loss = loss + weight * term

    _log_metrics(trainer, mode, terms, chosen_lr, rejected_lr, chosen_logps, rejected_logps, text_pairs,
                 (chosen_lr - (corrupted_logps - ref["ref_corrupted_logps"])) if corrupted_logps is not None
                 else None)
    if return_outputs:
        return loss, {"chosen_logps": chosen_logps, "rejected_logps": rejected_logps}
    return loss


def _require_live_reference(trainer) -> None:
    from accelerate.utils import is_peft_model
    if trainer.ref_model is None and not is_peft_model(trainer.model):
        # the policy is not the reference once it has taken a step: never silently use it as one
        raise RuntimeError("no reference model: full fine-tuning needs TRL's reference copy or precompute")


def rehearsal_compact_loss(trainer, model, inputs: dict, return_outputs: bool):
    """TRL's `sigmoid` / `sft` loss on a compact batch: rows [chosen of all B pairs..., rejected of the P text
    pairs...] (TRL's own layout when P = B). A pair with equal texts (a rehearsal row) has a rejected row
    identical to its chosen row, so its sigmoid term is exactly log 2 with no gradient, and TRL's sft term
    reads only chosen rows: skipping that row changes neither loss nor gradient, and saves one policy
    forward+backward and one reference forward a rehearsal row (half of the demo's pairs). The sigmoid mean
    stays over all B pairs, as in TRL. Hand-written because TRL's loss assumes the [chosen, rejected] halves."""
    mode = "train" if trainer.model.training else "eval"
    text_pairs = inputs["text_pair_mask"].bool()
    n = text_pairs.numel()
    main = {k: v for k, v in inputs.items() if k not in BATCH_EXTRAS and not k.startswith(CORRUPTED)}
    per_token = trainer._per_token_logps(model, main)
    chosen_logps, rejected_logps = split_sides(per_token.sum(dim=1), text_pairs)
    if trainer.precompute_ref_logps:      # the cache has both sides of every pair (TRL's layout)
        ref_chosen = inputs["ref_chosen_logps"]
        ref_rejected = torch.where(text_pairs, inputs["ref_rejected_logps"], ref_chosen)
    else:
        _require_live_reference(trainer)
        # one reference forward a step whatever the batch holds (every rank runs the same collectives)
        ref_chosen, ref_rejected = split_sides(trainer.reference_per_token_logps(main).sum(dim=1), text_pairs)
    # a rehearsal pair's rejected side is its chosen side: the same values, so its margin is exactly 0
    chosen_lr, rejected_lr = chosen_logps - ref_chosen, rejected_logps - ref_rejected

    chosen_tokens, chosen_mask = per_token[:n], main["completion_mask"][:n, 1:]
    loss, terms = 0.0, {}
    for loss_type, weight in zip(trainer.loss_types, trainer.loss_weights, strict=True):
        if loss_type == "sigmoid":
            term = sigmoid_loss(trainer.beta, chosen_lr, rejected_lr).mean()
        elif loss_type == "sft":
            term = -chosen_tokens[chosen_mask.bool()].mean()
        else:   # the trainer compacts batches for these two only
            raise ValueError(f"loss type {loss_type!r} is not computed on a compact batch")
        terms[loss_type] = term.detach()
        loss = loss + weight * term
    _log_metrics(trainer, mode, terms, chosen_lr, rejected_lr, chosen_logps, rejected_logps, text_pairs, None)
    if return_outputs:
        return loss, {"chosen_logps": chosen_logps, "rejected_logps": rejected_logps}
    return loss


def _log_metrics(trainer, mode, terms, chosen_lr, rejected_lr, chosen_logps, rejected_logps, text_pairs,
                 image_margin_lr) -> None:
    gather = trainer.accelerator.gather_for_metrics
    metrics = trainer._metrics[mode]
    beta = trainer.beta
    chosen_r, rejected_r = (beta * chosen_lr).detach(), (beta * rejected_lr).detach()
    mask = gather(text_pairs.float())
    n_text = mask.sum().clamp(min=1.0)
    margins = gather(chosen_r - rejected_r)
    metrics["rewards/chosen"].append(gather(chosen_r).mean().item())
    metrics["rewards/rejected"].append(gather(rejected_r).mean().item())
    # accuracy and margin over the pairs with a text preference (image pairs have equal texts)
    metrics["rewards/accuracies"].append(((margins > 0).float() * mask).sum().item() / n_text.item())
    metrics["rewards/margins"].append((margins * mask).sum().item() / n_text.item())
    metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
    metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
    if image_margin_lr is not None:
        image_margins = gather((beta * image_margin_lr).detach())
        metrics["rewards/image_margins"].append(image_margins.mean().item())
        metrics["rewards/image_accuracies"].append((image_margins > 0).float().mean().item())
    for name, value in terms.items():
        metrics[f"loss/{name}"].append(gather(value.reshape(1)).mean().item())
