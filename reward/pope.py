"""POPE (Li et al. 2023) scoring: answer parsing and accuracy / precision / recall / F1 / yes-ratio.

Harnesses disagree on POPE mostly because they parse answers differently, so the policy is explicit and
named in every result:

- "reference" is RUCAIBox/POPE evaluate.py: keep the text before the first ".", drop commas, split on
  single spaces, answer "no" if any word is exactly "No", "no" or "not", else "yes". Every answer parses
  ("NO" and "Nope." count as yes -- that is the reference).
- "strict" accepts only a bare yes/no word (case-insensitive, surrounding whitespace and . , ! ignored),
  the exact-match scoring of lmms-eval; anything else is unparsed.

Positive = "yes". An unparsed answer is neither a yes nor a no: it counts against accuracy (n includes
it), it is a miss for recall when the label is yes, and it is not in precision's denominator. Under the
reference policy nothing is unparsed and the numbers equal evaluate.py's.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from reward.files import InputError

POLICIES = ("reference", "strict")
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
_STRICT_STRIP = " \t\r\n.,!"


def parse_pope_answer(text: str, policy: str = "reference") -> str | None:
    """"yes", "no", or None when the policy cannot read the answer."""
    if policy == "reference":
        if "." in text:
            text = text.split(".")[0]
        words = text.replace(",", "").split(" ")
        return "no" if ("No" in words or "not" in words or "no" in words) else "yes"
    if policy == "strict":
        word = text.strip(_STRICT_STRIP).lower()
        return word if word in ("yes", "no") else None
    raise ValueError(f"POPE parsing policy must be one of {POLICIES}, not {policy!r}")


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def _setting_metrics(labels: list[str], preds: list[str | None]) -> dict:
    tp = sum(1 for lab, p in zip(labels, preds) if lab == "yes" and p == "yes")
    fp = sum(1 for lab, p in zip(labels, preds) if lab == "no" and p == "yes")
    tn = sum(1 for lab, p in zip(labels, preds) if lab == "no" and p == "no")
    fn = sum(1 for lab, p in zip(labels, preds) if lab == "yes" and p == "no")
    unparsed = sum(1 for p in preds if p is None)
    n = len(labels)
    positives = sum(1 for lab in labels if lab == "yes")
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, positives)
    f1 = _ratio(2 * precision * recall, precision + recall) if precision + recall else 0.0
    return {"accuracy": _ratio(tp + tn, n), "precision": precision, "recall": recall, "f1": f1,
            "yes_ratio": _ratio(tp + fp, n), "n": n, "unparsed": unparsed,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def _lookup(answers: Mapping, qid: Any):
    if qid in answers:
        return answers[qid]
    alt = str(qid) if not isinstance(qid, str) else (int(qid) if qid.strip().lstrip("-").isdigit() else None)
    return answers.get(alt) if alt is not None else None


def pope_metrics(questions: Sequence[Mapping], answers: Mapping[Any, str], policy: str = "reference") -> dict:
    """POPE result: {"policy", "settings": {setting: metrics}, "average": metrics averaged over settings}.

    questions: records with "question_id", "label" ("yes"/"no") and "setting" (missing: "all");
    answers: question_id -> the model's answer text. Per-setting metrics also carry tp/fp/tn/fn.
    """
    if policy not in POLICIES:
        raise ValueError(f"POPE parsing policy must be one of {POLICIES}, not {policy!r}")
    by_setting: dict[str, tuple[list, list]] = {}
    for k, q in enumerate(questions):
        qid = q.get("question_id")
        label = str(q.get("label", "")).strip().lower()
        if label not in ("yes", "no"):
            raise InputError(f"label is {q.get('label')!r}, expected 'yes' or 'no'", record=f"question {qid!r}",
                             fix="use POPE question files written by `halign data pope`")
        answer = _lookup(answers, qid)
        if answer is None:
            raise InputError("no answer for this question", record=f"question {qid!r}",
                             fix="generate an answer for every question (or pass the matching answers file)")
        labels, preds = by_setting.setdefault(str(q.get("setting") or "all"), ([], []))
        labels.append(label)
        preds.append(parse_pope_answer(str(answer), policy))
    settings = {name: _setting_metrics(labels, preds) for name, (labels, preds) in by_setting.items()}
    average: dict[str, Any] = {m: (sum(s[m] for s in settings.values()) / len(settings) if settings else 0.0)
                               for m in METRICS}
    average["n"] = sum(s["n"] for s in settings.values())
    average["unparsed"] = sum(s["unparsed"] for s in settings.values())
    return {"policy": policy, "settings": settings, "average": average}
