"""Prompts for online RL (PPO, GRPO): image prompts joined with the grounded objects of their images.

Input: a prompts JSONL `{"image_id", "image", "prompt"}` (what `halign data synth` writes as
`prompts_{split}.jsonl`, and what `halign eval generate` reads) plus grounded annotations — COCO
`instances_*.json` or the generic JSONL (data_prep.annotations.load_annotations) — matched by image id.
A prompt record may instead carry its image's objects itself (`"objects": ["dog", ...]`); then no
annotation file is needed.

Output: a `datasets.Dataset` with one row per prompt, in TRL's conversational vision layout plus the
ground truth the reward needs:
    {"images": [PIL image], "prompt": [{"role": "user", "content": [{"type": "image"},
                                                                  {"type": "text", "text": ...}]}],
     "objects": [canonical object names], "image_id": str}
TRL's GRPOTrainer/RLOOTrainer pass the extra columns (`objects`) to reward functions as keyword arguments,
which is how reward.grounded.GroundedReward finds each completion's ground truth; halign's PPO reads the
same rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reward.files import InputError


@dataclass
class RLFields:
    """What online RL stages share besides the model: where the ground truth is, and the reward's shape."""
    annotations: str | None = field(
        default=None, metadata={"help": "grounded annotations of the prompt images (COCO instances JSON or "
                                        "JSONL); not needed when the prompts carry 'objects'"})
    vocab: str = field(default="coco", metadata={"help": "object vocabulary: coco, shapes, or a JSON/YAML file"})
    hallucination_weight: float = field(default=1.0, metadata={"help": "weight of the hallucination penalty"})
    coverage_weight: float = field(default=0.5, metadata={"help": "weight of the coverage bonus"})
    extra_reward_function: str | None = field(default=None, metadata={
        "help": "'package.module:function': a TRL-style reward function (completions, **columns) -> list[float], "
                "e.g. a learned reward model's score, added to the grounded reward"})
    extra_reward_weight: float = field(default=1.0, metadata={"help": "weight of extra_reward_function"})


def conversational_prompt(text: str) -> list[dict]:
    """A user turn holding one image placeholder and the prompt text (TRL fills the image from `images`)."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def load_rl_rows(prompts: str | Path, annotations: str | Path | None = None, images_dir: str | Path | None = None,
                 vocab=None, max_samples: int | None = None) -> list[dict]:
    """The joined rows with image *paths* (see load_rl_dataset for the decoded Dataset)."""
    from align.generate import read_prompts
    from data_prep.annotations import load_annotations

    prompts = Path(prompts)
    records = read_prompts(prompts, images_dir)
    truth: dict[str, list[str]] = {}
    if annotations is not None:
        # Images are found through the prompts file; the annotation file only has to name the objects.
        loaded = load_annotations(annotations, vocab=vocab, check_images=False)
        truth = {str(im.image_id): sorted(im.object_names) for im in loaded}
    rows = []
    for line, rec in enumerate(records, 1):
        objects = rec.extra.get("objects")
        if objects is None:
            if annotations is None:
                raise InputError("the prompt record carries no 'objects' and no annotation file was given",
                                 file=prompts, record=f"line {line}",
                                 fix="set `annotations:` to the instances JSON (or JSONL) of the prompt images")
            key = str(rec.image_id)
            if key not in truth:
                raise InputError(f"image_id {rec.image_id!r} has no entry in the annotations", file=prompts,
                                 record=f"line {line}",
                                 fix=f"use the annotation file of the same split as the prompts ({annotations})")
            objects = truth[key]
        elif not isinstance(objects, list) or not all(isinstance(o, (str, dict)) for o in objects):
            raise InputError("'objects' must be a list of object names", file=prompts, record=f"line {line}")
        else:
            objects = [o["name"] if isinstance(o, dict) else o for o in objects]
        rows.append({"images": [str(rec.image)], "prompt": conversational_prompt(rec.prompt),
                     "objects": list(objects), "image_id": str(rec.image_id)})
        if max_samples and len(rows) >= max_samples:
            break
    if not rows:
        raise InputError("the prompts file holds no prompt", file=prompts)
    return rows


def load_rl_dataset(prompts: str | Path, annotations: str | Path | None = None,
                    images_dir: str | Path | None = None, vocab=None, max_samples: int | None = None):
    """Prompts joined with their images' objects as a Dataset whose `images` decode to PIL on access."""
    from datasets import Dataset, Image, Sequence

    ds = Dataset.from_list(load_rl_rows(prompts, annotations, images_dir, vocab, max_samples))
    return ds.cast_column("images", Sequence(Image()))


def rl_dataset_from_config(cfg):
    """The RL dataset named by a stage config (DataFields + RLFields)."""
    if not cfg.dataset:
        raise InputError("no prompts given", file=getattr(cfg, "config_path", None),
                         fix="set `dataset:` to a prompts JSONL ({\"image_id\", \"image\", \"prompt\"})")
    return load_rl_dataset(cfg.dataset, cfg.annotations, cfg.images_dir, cfg.vocab, cfg.max_samples)


def grounded_reward_from_config(cfg, processor=None):
    """reward.grounded.GroundedReward as the config describes it; strips the processor's image token too."""
    from reward.grounded import GroundedReward

    special = []
    if processor is not None:
        tok = getattr(processor, "tokenizer", processor)
        special = [t for t in getattr(tok, "all_special_tokens", [])]
        image_token = getattr(processor, "image_token", None)
        if image_token:
            special.append(image_token)
    return GroundedReward(vocab=cfg.vocab, hallucination_weight=cfg.hallucination_weight,
                          coverage_weight=cfg.coverage_weight, objects_column="objects", special_tokens=special)


def load_extra_reward(spec: str):
    """The function named by 'package.module:function'."""
    import importlib

    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise InputError(f"extra_reward_function {spec!r} cannot be imported ({e})",
                         fix="give 'package.module:function', importable from the working directory") from None
    if not callable(fn):
        raise InputError(f"extra_reward_function {spec!r} is not callable")
    return fn


def reward_functions(cfg, processor=None) -> list[tuple]:
    """[(reward function, weight)]: the grounded reward first, then the extra one if configured.

    Every function is called TRL's way, fn(completions, **columns) -> list[float], where the columns are
    the dataset's (objects, image_id, images, prompts): a learned reward model plugs in as such a function."""
    fns = [(grounded_reward_from_config(cfg, processor), 1.0)]
    if cfg.extra_reward_function:
        fns.append((load_extra_reward(cfg.extra_reward_function), cfg.extra_reward_weight))
    return fns
