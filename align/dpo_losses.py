"""The math of halign's hallucination-aware DPO losses, on plain tensors (no model, no trainer).

Notation: a *log-ratio* is log pi(y|x) - log pi_ref(y|x) summed over the completion tokens; beta is DPO's
temperature. Each function returns one loss per pair; the trainer averages over the pairs a term applies to.

- `sigmoid`: DPO (Rafailov et al. 2023): -log s(beta * (r_chosen - r_rejected)).
- `mdpo_conditional`: mDPO's conditional preference (Wang et al. 2024, "mDPO: Conditional Preference
  Optimization for Multimodal LLMs"): the same chosen text, preferred with the real image m_w over a
  corrupted image m_l: -log s(beta * (log-ratio(y_w | m_w, x) - log-ratio(y_w | m_l, x))). Text-only DPO
  can be won by ignoring the image; this term cannot.
- `mdpo_anchor`: mDPO's anchored preference: -log s(beta * r_chosen - delta), which keeps the chosen
  response's likelihood from falling below the reference's (plain DPO lets both sides drop).
- `dense`: RLHF-V's dense DPO (Yu et al., "RLHF-V", CVPR 2024): each side's log-probability is a weighted mean over
  its tokens, weight gamma on the corrected (changed) segments and 1 elsewhere,
  log pi(y|x) = (sum_unchanged log p + gamma * sum_changed log p) / (n_unchanged + gamma * n_changed),
  and then the DPO sigmoid on those scores, so the pair's few differing words carry the signal.
- `sft_rows`: the chosen side's negative log-likelihood, averaged over each row's tokens and then over the
  rows. TRL's `sft` averages over all the batch's tokens, so in the demo a caption (13 tokens) weighs
  several times a yes/no answer ("No." is 2); here every chosen response weighs the same, which lets
  short yes/no rehearsal rows hold their skill against long caption pairs.
"""
from __future__ import annotations

import difflib
import re

import torch
import torch.nn.functional as F

HALIGN_LOSS_TYPES = ("mdpo_conditional", "mdpo_anchor", "dense", "sft_rows")
# TRL loss types that halign's own loss computation also implements (others stay TRL-only)
SHARED_LOSS_TYPES = ("sigmoid", "sft")


def sigmoid_loss(beta: float, chosen_logratios: torch.Tensor, rejected_logratios: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))


def conditional_image_loss(beta: float, real_image_logratios: torch.Tensor,
                           corrupted_image_logratios: torch.Tensor) -> torch.Tensor:
    """mDPO's conditional preference: the chosen text's log-ratio with the real vs the corrupted image."""
    return -F.logsigmoid(beta * (real_image_logratios - corrupted_image_logratios))


def anchor_loss(beta: float, chosen_logratios: torch.Tensor, delta: float = 0.0) -> torch.Tensor:
    """mDPO's anchor: push the chosen reward beta * r_chosen above delta."""
    return -F.logsigmoid(beta * chosen_logratios - delta)


def weighted_sequence_logps(per_token_logps: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_t w_t * logp_t / sum_t w_t per row (weights are 0 outside the completion)."""
    return (per_token_logps * weights).sum(dim=-1) / weights.sum(dim=-1).clamp(min=1e-8)


def masked_mean(per_pair: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the pairs the term applies to; a differentiable zero when it applies to none.

    (A zero keeps every rank's backward identical under DDP/ZeRO even when a batch has no such pair.)"""
    mask = mask.to(per_pair.dtype)
    return (per_pair * mask).sum() / mask.sum().clamp(min=1.0)


# ------------------------------------------------------------------------------------------- segment marks
# A pair may carry the corrected segments of each side as character spans into the assistant message's text:
#     "chosen_segments": [[start, end], ...], "rejected_segments": [[start, end], ...]
# (end exclusive, offsets in characters of the message text, not of the rendered template). RLHF-V's human
# corrections are exactly such spans; for the edits data_prep makes (inject's insert/swap/omit, correct's
# removals) the word-level difference of the two texts gives the same spans, see `diff_segments`.

_WORD = re.compile(r"\w+|[^\w\s]")   # words and punctuation marks, each a unit


def diff_segments(chosen: str, rejected: str) -> tuple[list[list[int]], list[list[int]]]:
    """Character spans of the words that differ between the two texts (word-level diff), per side.

    A run of adjacent differing words is one span ("and a yellow heart")."""
    cw = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(chosen)]
    rw = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(rejected)]
    matcher = difflib.SequenceMatcher(a=[w for *_, w in cw], b=[w for *_, w in rw], autojunk=False)
    chosen_spans, rejected_spans = [], []
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag == "equal":
            continue
        if a1 > a0:
            chosen_spans.append([cw[a0][0], cw[a1 - 1][1]])
        if b1 > b0:
            rejected_spans.append([rw[b0][0], rw[b1 - 1][1]])
    return chosen_spans, rejected_spans


def token_weights(offsets: list[tuple[int, int]], text_start: int, segments, gamma: float) -> list[float]:
    """Weight per completion token: gamma if the token overlaps a marked segment, else 1.

    offsets: (start, end) of each token in the rendered completion; text_start: where the message's text
    begins inside the rendered completion (segments are relative to the message text)."""
    spans = [(text_start + s, text_start + e) for s, e in (segments or [])]
    weights = []
    for start, end in offsets:
        hit = any(start < e and s < end for s, e in spans) if end > start else False
        weights.append(gamma if hit else 1.0)
    return weights
