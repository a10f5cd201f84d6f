"""Grounded, per-response object metrics (AMBER-style) and the grounded reward for online RL.

A response is compared with the ground-truth objects of its image through the same mention extractor
CHAIR uses (reward/chair.py):
- hallucinated mentions: mentions of objects not in the image (duplicates counted, as CHAIR does);
- coverage: the share of the image's objects the response mentions at least once;
- has_hallucination: any hallucinated mention (AMBER's "Hal").

`GroundedReward` turns that into one float per completion, usable as a TRL reward function
(GRPOTrainer(reward_funcs=[GroundedReward(...)])) and by halign's own PPO:

    reward = coverage_weight * |covered GT objects| / |GT objects|
           - hallucination_weight * n_hallucinated / (n_hallucinated + |covered GT objects|)

Both terms lie in [0, 1], so the reward stays in [-hallucination_weight, coverage_weight] whatever the
length. Every hallucinated mention raises the penalty; repeating a correct object does not dilute it
(correct objects are counted once), so padding a caption with "a dog, a dog, a dog" earns nothing.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence

from reward.chair import _compile, _object_words, lookup_truth
from reward.vocab import Vocabulary, load_vocabulary

# Image placeholders and special tokens of common VLM chat templates: "<image>", "<|image_pad|>",
# "<|vision_start|>", "</s>", "<s>", "<pad>", "[IMG]", "[IMG_BREAK]", ...
_SPECIAL_TOKENS = re.compile(r"<\|[A-Za-z0-9_]+\|>|</?(?:s|image|pad|unk|eos|bos|img)>|\[IMG(?:_BREAK|_END)?\]")


def canonical_objects(names: Iterable[Any], vocab: Vocabulary | str = "coco", mode: str = "reference") -> set[str]:
    """Ground-truth object names -> canonical objects. A name may be a canonical name, a listed surface
    form ("people"), a plural ("Stars") or an annotation dict with a "name"; names that name no object
    of the vocabulary are dropped."""
    vocab = load_vocabulary(vocab)
    matcher = _compile(vocab, mode)
    out = set()
    for name in names:
        name = name["name"] if isinstance(name, Mapping) else str(name)
        obj = vocab.canonical(name)
        if obj is not None:
            out.add(obj)
        else:  # resolve it the way captions are read
            out.update(o for o, _, _, _ in _object_words(name, matcher))
    return out


def response_stats(text: str, gt_objects: Iterable[str], vocab: Vocabulary | str = "coco",
                   mode: str = "reference") -> dict:
    """One response against its image's objects: what it mentions, what it hallucinates, what it covers."""
    return _stats(_object_words(text, _compile(load_vocabulary(vocab), mode)),
                  canonical_objects(gt_objects, vocab, mode))


def _stats(found: list, truth: set[str]) -> dict:
    mentioned = [obj for obj, _, _, _ in found]
    hallucinated = [obj for obj in mentioned if obj not in truth]
    covered = truth.intersection(mentioned)
    return {
        "mentioned": mentioned,                          # objects, in order, duplicates kept
        "hallucinated": hallucinated,                    # likewise, those not in the image
        "hallucinated_objects": sorted(set(hallucinated)),
        "covered_objects": sorted(covered),
        "n_mentions": len(mentioned),
        "n_hallucinated": len(hallucinated),
        "n_gt_objects": len(truth),
        "coverage": len(covered) / len(truth) if truth else 0.0,
        "chair": len(hallucinated) / len(mentioned) if mentioned else 0.0,
        "has_hallucination": bool(hallucinated),
    }


def amber_metrics(responses: Sequence[Mapping], ground_truth: Mapping, vocab: Vocabulary | str = "coco",
                  mode: str = "reference") -> dict:
    """Corpus-level AMBER generative metrics, pooled from integer counts as AMBER's inference.py does.

    responses: records with "image_id" and "response" (or "caption"). chair = hallucinated mentions /
    mentions; cover = covered GT objects / GT objects; hal = share of responses with a hallucination.
    """
    from reward.chair import caption_text
    matcher = _compile(load_vocabulary(vocab), mode)
    n_mentions = n_hallucinated = n_gt = n_covered = n_hal = 0
    for k, rec in enumerate(responses):
        truth = set(lookup_truth(ground_truth, rec.get("image_id")) or ())
        s = _stats(_object_words(caption_text(rec, f"response {k}"), matcher), truth)
        n_mentions += s["n_mentions"]
        n_hallucinated += s["n_hallucinated"]
        n_gt += s["n_gt_objects"]
        n_covered += len(s["covered_objects"])
        n_hal += s["has_hallucination"]
    n = len(responses)
    return {
        "chair": n_hallucinated / n_mentions if n_mentions else 0.0,
        "cover": n_covered / n_gt if n_gt else 0.0,
        "hal": n_hal / n if n else 0.0,
        "n_responses": n, "n_mentions": n_mentions, "n_hallucinated": n_hallucinated,
        "n_gt_objects": n_gt, "n_covered": n_covered,
    }


def _completion_text(completion: Any) -> str:
    """Plain text of a completion: a string, or a conversational list of {"role", "content"} messages
    whose content is a string or a list of typed parts ({"type": "text", "text": ...})."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Mapping):
        completion = [completion]
    parts: list[str] = []
    for message in completion or ():
        content = message.get("content", "") if isinstance(message, Mapping) else message
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, Sequence):
            parts.extend(p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return "\n".join(parts)


class GroundedReward:
    """Per-completion reward: covered image objects minus hallucinated mentions (see the module docstring).

    Args:
        vocab: the object vocabulary ("coco", "shapes", a file, or a Vocabulary).
        hallucination_weight: weight of the hallucination penalty (the reward's floor is its negative).
        coverage_weight: weight of the coverage bonus (the reward's ceiling).
        objects_column: dataset column holding each sample's ground-truth object names (a list of str).
        special_tokens: extra strings to strip before scoring (e.g. the processor's image token).
        mode: CHAIR extraction mode, "reference" or "fixed".
    """

    __name__ = "grounded_reward"  # TRL logs reward functions by __name__

    def __init__(self, vocab: Vocabulary | str = "coco", hallucination_weight: float = 1.0,
                 coverage_weight: float = 0.5, objects_column: str = "objects", special_tokens: Sequence[str] = (),
                 mode: str = "reference"):
        self.vocab = load_vocabulary(vocab)
        self.hallucination_weight = float(hallucination_weight)
        self.coverage_weight = float(coverage_weight)
        self.objects_column = objects_column
        self.mode = mode
        self._matcher = _compile(self.vocab, mode)
        extra = sorted({t for t in special_tokens if t}, key=len, reverse=True)
        self._strip = re.compile("|".join([re.escape(t) for t in extra] + [_SPECIAL_TOKENS.pattern]))
        self._truth_cache: dict[tuple, frozenset] = {}

    def clean(self, text: str) -> str:
        """The completion with special and image tokens replaced by spaces."""
        return self._strip.sub(" ", text)

    def _truth(self, objects: Any) -> frozenset[str]:
        """A sample's ground-truth object names -> canonical objects (cached: datasets repeat images)."""
        if objects is None:
            return frozenset()
        if isinstance(objects, (str, Mapping)):
            objects = [objects]
        key = tuple(o["name"] if isinstance(o, Mapping) else str(o) for o in objects)
        cached = self._truth_cache.get(key)
        if cached is None:
            if len(self._truth_cache) >= 1 << 16:
                self._truth_cache.clear()
            cached = self._truth_cache[key] = frozenset(canonical_objects(key, self.vocab, self.mode))
        return cached

    def score(self, text: str, objects: Any) -> float:
        """The reward of one completion text given its image's objects."""
        truth = self._truth(objects)
        found = _object_words(self.clean(text), self._matcher)
        n_hallucinated = sum(1 for obj, _, _, _ in found if obj not in truth)
        n_covered = len(truth.intersection([obj for obj, _, _, _ in found]))
        coverage = n_covered / len(truth) if truth else 0.0
        penalty = n_hallucinated / (n_hallucinated + n_covered) if n_hallucinated else 0.0
        return self.coverage_weight * coverage - self.hallucination_weight * penalty

    def __call__(self, completions: Sequence[Any], **columns: Any) -> list[float]:
        if self.objects_column not in columns:
            raise KeyError(f"GroundedReward needs the dataset column {self.objects_column!r} (each sample's "
                           f"ground-truth object names); the batch has {sorted(columns)}")
        objects = columns[self.objects_column]
        if len(objects) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(objects)} rows of {self.objects_column!r}")
        rewards = [self.score(_completion_text(c), o) for c, o in zip(completions, objects)]
        log_metric = columns.get("log_metric")
        if callable(log_metric) and rewards:  # TRL GRPOTrainer passes this hook
            log_metric("grounded_reward/mean", sum(rewards) / len(rewards))
        return rewards
