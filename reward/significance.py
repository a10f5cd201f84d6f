"""Paired bootstrap intervals for a checkpoint's change against a base checkpoint on the same items.

Is a 0.2-point drop of POPE F1 on 900 questions a regression, or noise? Re-draw the benchmark's items
(images for CHAIR, questions for POPE) with replacement, score both checkpoints on the same draw, and
take the spread of the change. Pairing matters: both checkpoints answer the same items, so most of the
item-to-item variance cancels and the interval of the difference is far narrower than two separate
intervals would suggest. Pure functions on per-item outcomes (no model, no I/O).

Written with numpy: scipy.stats.bootstrap does the same, but scipy is not otherwise a dependency, and a
paired resample of rows is a few lines.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from reward.pope import parse_pope_answer


def paired_bootstrap(change: Callable[[np.ndarray, np.ndarray], np.ndarray], base: np.ndarray,
                     new: np.ndarray, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """Percentile interval of change(base, new) over resampled item rows, the same rows for both.

    base, new: (n_items, k) per-item outcomes, row i of both about the same item. `change` maps two arrays
    of shape (b, n_items, k) to (b,) changes. Returns {"delta" (on all items), "low", "high", "level"}.
    """
    base, new = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    if base.shape != new.shape or base.ndim != 2 or not len(base):
        raise ValueError(f"paired outcomes need the same (n_items, k) shape, got {base.shape} and {new.shape}")
    idx = np.random.default_rng(seed).integers(0, len(base), size=(n_resamples, len(base)))
    with np.errstate(divide="ignore", invalid="ignore"):      # a resample may hold no positive: nan, dropped
        deltas = change(base[idx], new[idx])
        delta = float(change(base[None], new[None])[0])
    deltas = deltas[np.isfinite(deltas)]
    low, high = np.quantile(deltas, [(1 - level) / 2, (1 + level) / 2]) if len(deltas) else (np.nan, np.nan)
    return {"delta": round(delta, 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "level": level}


# ---------------------------------------------------------------- the changes the report states
def chair_s_relative(base: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Relative change of CHAIR_s (column 0: the caption hallucinates)."""
    b = base[..., 0].mean(-1)
    return (new[..., 0].mean(-1) - b) / b


def recall_delta(base: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Change of recall, ground-truth objects mentioned (column 1) over those present (column 2)."""
    return new[..., 1].sum(-1) / new[..., 2].sum(-1) - base[..., 1].sum(-1) / base[..., 2].sum(-1)


def _f1(x: np.ndarray) -> np.ndarray:
    label, said_yes = x[..., 0], x[..., 1]
    tp = (label * said_yes).sum(-1)
    return 2 * tp / (said_yes.sum(-1) + label.sum(-1))    # = 2PR / (P + R)


def f1_delta(base: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Change of POPE F1 (column 0: the label is yes, column 1: the answer is yes)."""
    return _f1(new) - _f1(base)


# ---------------------------------------------------------------- per-item outcomes
def chair_outcomes(per_caption: Sequence[Mapping]) -> dict:
    """(image id, k) -> (hallucinates, ground-truth objects mentioned, ground-truth objects) for the k-th
    caption of that image (several prompts per image stay several items), from chair_scores."""
    out, seen = {}, {}
    for c in per_caption:
        truth = set(c["ground_truth"])
        k = seen[c["image_id"]] = seen.get(c["image_id"], -1) + 1
        out[(c["image_id"], k)] = (float(bool(c["hallucinated"])), len(truth & {o for _, o in c["mentioned"]}),
                                   len(truth))
    return out


def pope_outcomes(questions: Sequence[Mapping], answers: Mapping, policy: str = "reference") -> dict:
    """question id -> (label is yes, answer parses as yes); an unparsed answer counts as not yes, as in
    pope_metrics (it is neither a true nor a false positive)."""
    return {q["question_id"]: (float(str(q["label"]).strip().lower() == "yes"),
                               float(parse_pope_answer(str(answers[q["question_id"]]), policy) == "yes"))
            for q in questions if q["question_id"] in answers}


def paired_rows(base: Mapping, new: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """The items both checkpoints have, in one order."""
    keys = [k for k in base if k in new]
    return np.array([base[k] for k in keys], dtype=float), np.array([new[k] for k in keys], dtype=float)


def change_intervals(base: Mapping, new: Mapping, n_resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict:
    """Intervals for the report's changes. base/new: {"chair": chair_outcomes(...),
    "pope": {setting: pope_outcomes(...)}} (either may be missing). Keys as report.relative_changes."""
    out = {}
    if base.get("chair") and new.get("chair"):
        b, n = paired_rows(base["chair"], new["chair"])
        if len(b) and b[:, 0].any():
            out["chair_s_relative"] = paired_bootstrap(chair_s_relative, b, n, n_resamples, level, seed)
        if len(b) and b[:, 2].any():
            out["recall_delta"] = paired_bootstrap(recall_delta, b, n, n_resamples, level, seed)
    for setting, outcomes in (base.get("pope") or {}).items():
        if setting in (new.get("pope") or {}):
            b, n = paired_rows(outcomes, new["pope"][setting])
            if len(b) and b[:, 0].any():
                out[f"pope_{setting}_f1_delta"] = paired_bootstrap(f1_delta, b, n, n_resamples, level, seed)
    return out


# ---------------------------------------------------------------- one figure over several seeds
# Two-sided 95 % quantiles of Student's t for 1-30 degrees of freedom (a table: scipy is not a dependency).
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t95(df: int) -> float:
    """Two-sided 95 % quantile of Student's t; past 30 degrees of freedom the Cornish-Fisher correction of
    the normal quantile (z + (z^3 + z) / 4 df), within 0.002 of the exact value there."""
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, got {df}")
    z = 1.959964
    return _T95[df - 1] if df <= len(_T95) else z + (z ** 3 + z) / (4 * df)


def seed_mean_interval(values: Sequence[float]) -> dict:
    """Mean of one figure over independent runs (one a seed) with its 95 % t interval.

    The paired bootstrap above holds one run's benchmark noise; the spread between seeds also holds what
    each seed's training draws, so this interval answers "does the target hold on average over seeds"
    (a single seed's figure scatters around it by that spread). One value: no interval (None)."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or not len(x):
        raise ValueError(f"seed_mean_interval needs a non-empty list of figures, got {values!r}")
    mean = float(x.mean())
    if len(x) < 2:
        return {"mean": mean, "low": None, "high": None, "sd": None, "n": 1}
    sd = float(x.std(ddof=1))
    half = t95(len(x) - 1) * sd / np.sqrt(len(x))
    return {"mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": len(x)}
