"""POPE question sets (Li et al. 2023, "Evaluating Object Hallucination in Large Vision-Language Models").

What the reference builder (RUCAIBox/POPE, utils.py + main.py) does, kept here:
- images holding at least 3 distinct objects, a random sample of 500 of them;
- per image, 3 present objects (label "yes") and 3 absent ones (label "no"), asked in turns: yes, no,
  yes, no, yes, no; question ids count from 1 per setting file;
- negatives: "random" (uniform over the object universe), "popular" (the most frequent objects over the
  sampled images, skipping what is present or already asked), "adversarial" (for each present object,
  the object that co-occurs with it most often over the sampled images); when a ranked list runs out,
  a random object;
- the three settings share the same images and the same present objects.
Deliberate differences: seeded everywhere (the reference draws from the global `random` state); the present
objects are a seeded sample, not the first three in annotation order (which favours whatever the annotators
boxed first); the question uses the right article ("an apple"; the reference's `template.replace("a", "an")`
also turns "image" into "imange"); ties in the rankings are broken by popularity then name, not dict order.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterable, Literal

from reward.files import InputError, write_json, write_jsonl

from data_prep.annotations import GroundedImage
from data_prep.objstats import ObjectStats, read_id_list
from data_prep.textedit import article_for

SETTINGS = ("random", "popular", "adversarial")
TEMPLATE = "Is there {article} {object} in the image?"


def select_pope_images(images: Iterable[GroundedImage], n_images: int = 500, seed: int = 0,
                       min_objects: int = 3) -> list[GroundedImage]:
    """A seeded sample of the images holding at least `min_objects` distinct objects (file order kept
    before sampling, so the same inputs and seed give the same images)."""
    eligible = [im for im in images if len(im.object_names) >= min_objects]
    if len(eligible) < n_images:
        raise InputError(f"only {len(eligible)} images hold at least {min_objects} distinct objects, "
                         f"{n_images} were asked for", fix="lower --n-images or pass more annotations")
    return random.Random(f"pope-images|{seed}").sample(eligible, n_images)


def build_pope_questions(images: Iterable[GroundedImage], vocab=None, *, setting: str, n_images: int = 500,
                         seed: int = 0, per_image: int = 3, template: str = TEMPLATE, min_objects: int = 3,
                         preselected: bool = False, avoid: dict | None = None) -> list[dict]:
    """POPE questions for one setting: `per_image` present + `per_image` absent objects per image.

    images: grounded images; sampled here unless `preselected` (then used as given, in order).
    vocab: a Vocabulary (its objects are the universe for random negatives) or None (the objects seen).
    avoid: optional {image_id: set of names} never used as negatives (e.g. objects the GT captions name).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    chosen = list(images) if preselected else select_pope_images(images, n_images, seed, min_objects)
    stats = ObjectStats(im.object_names for im in chosen)  # over the sampled images, as the reference
    universe = sorted(set(vocab.objects) if vocab is not None else set(stats.images))
    popular = stats.popular(universe)
    cooc = {o: stats.cooccurring(o) for o in stats.images}
    questions: list[dict] = []
    for image in chosen:
        present = image.object_names
        if len(present) < per_image:
            raise InputError(f"image {image.image_id!r} holds {len(present)} distinct objects, fewer than "
                             f"{per_image}", fix="list only images with enough objects")
        # present objects: the same for every setting (the rng does not depend on the setting)
        positives = random.Random(f"pope-pos|{seed}|{image.image_id}").sample(sorted(present), per_image)
        rng = random.Random(f"pope-neg|{seed}|{setting}|{image.image_id}")
        blocked = set(present) | set((avoid or {}).get(image.image_id, ()))
        asked: set[str] = set()
        for pos in positives:
            questions.append(_question(len(questions) + 1, image, pos, "yes", setting, template))
            ranked = popular if setting == "popular" else cooc.get(pos, []) if setting == "adversarial" else []
            neg = next((o for o in ranked if o not in blocked and o not in asked), None)
            if neg is None:
                pool = [o for o in universe if o not in blocked and o not in asked]
                if not pool:
                    raise InputError(f"no absent object left to ask about for image {image.image_id!r}",
                                     fix="use a vocabulary with more objects than an image holds")
                neg = rng.choice(pool)
            asked.add(neg)
            questions.append(_question(len(questions) + 1, image, neg, "no", setting, template))
    return questions


def _question(qid: int, image: GroundedImage, obj: str, label: str, setting: str, template: str) -> dict:
    return {"question_id": qid, "image_id": image.image_id, "image": image.file_name, "object": obj,
            "text": template.format(article=article_for(obj), object=obj), "label": label, "setting": setting}


def pope_command(annotations: Path, images: Path, out: Path,
                 setting: Literal["random", "popular", "adversarial", "all"] = "all", n_images: int = 500,
                 seed: int = 0, captions: Path | None = None, vocab: str = "coco", image_list: Path | None = None,
                 min_objects: int = 3, avoid_caption_objects: bool = False, skip_bad: bool = False,
                 check_images: bool = True) -> int:
    """Build POPE question sets (random, popular, adversarial) from grounded annotations.

    Writes OUT/pope_{setting}.jsonl (one question a line: question_id, image_id, image, object, text,
    label, setting) and OUT/pope_images.json (the sampled images with their objects; pass it back with
    --image-list to rebuild the same set, and to `halign data pairs --exclude` to keep it out of training).

    Args:
        annotations: COCO instances JSON or generic JSONL of grounded images.
        images: folder the image paths are relative to.
        out: output folder.
        setting: negative sampling: random, popular, adversarial, or all three.
        n_images: images to sample (each gets 3 yes and 3 no questions).
        seed: random seed (same inputs and seed give identical files).
        captions: COCO captions JSON, used only with --avoid-caption-objects.
        vocab: object vocabulary: coco, shapes, or a JSON/YAML file.
        image_list: a pope_images.json (or any id list) to reuse instead of sampling.
        min_objects: images need at least this many distinct objects.
        avoid_caption_objects: never ask about an object the image's GT captions name as a negative
            (CHAIR's notion of ground truth; the reference POPE uses annotations only).
        skip_bad: skip and count bad annotation records instead of stopping.
        check_images: check that every image file exists.
    """
    from data_prep.annotations import load_annotations, resolve_vocab

    voc = resolve_vocab(vocab)
    loaded = load_annotations(annotations, images, captions, vocab=voc, skip_bad=skip_bad,
                              check_images=check_images)
    if image_list is not None:
        chosen = _images_from_list(loaded.images, Path(image_list))
    else:
        chosen = select_pope_images(loaded.images, n_images, seed, min_objects)
    avoid = None
    if avoid_caption_objects:
        from reward.chair import extract_mentions
        avoid = {im.image_id: {m.object for c in im.captions for m in extract_mentions(c, voc)} for im in chosen}
    out = Path(out)
    settings = SETTINGS if setting == "all" else (setting,)
    counts = {}
    for s in settings:
        qs = build_pope_questions(chosen, voc, setting=s, seed=seed, preselected=True, avoid=avoid)
        counts[s] = write_jsonl(out / f"pope_{s}.jsonl", qs)
    write_json(out / "pope_images.json", {
        "seed": seed, "n_images": len(chosen), "min_objects": min_objects, "vocab": voc.name,
        "annotations": str(annotations),
        "images": [{"image_id": im.image_id, "image": im.file_name, "objects": sorted(im.object_names)}
                   for im in chosen]})
    skipped = f", skipped {dict(loaded.skipped)}" if loaded.skipped else ""
    print(f"pope: {len(chosen)} images, " + ", ".join(f"{s} {n} questions" for s, n in counts.items())
          + f" -> {out}{skipped}")
    return 0


def _images_from_list(images: list[GroundedImage], path: Path) -> list[GroundedImage]:
    wanted = _ordered_ids(path)
    by_id = {str(im.image_id): im for im in images}
    missing = [i for i in wanted if i not in by_id]
    if missing:
        raise InputError(f"{len(missing)} listed images are not in the annotations (first: {missing[0]!r})",
                         file=path, fix="pass the annotations the list was built from")
    return [by_id[i] for i in wanted]


def _ordered_ids(path: Path) -> list[str]:
    import json
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("images"), list):
            return [str(x["image_id"] if isinstance(x, dict) else x) for x in data["images"]]
        if isinstance(data, list):
            return [str(x["image_id"] if isinstance(x, dict) else x) for x in data]
    except (json.JSONDecodeError, KeyError, TypeError, OSError):
        pass
    ids = read_id_list(path)  # unordered formats: keep a stable order
    return sorted(ids)
