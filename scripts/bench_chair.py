#!/usr/bin/env python
"""Benchmark CHAIR scoring speed: captions per second on one core, reference mode, COCO vocabulary.

    python scripts/bench_chair.py [--n 60000] [--seed 0] [--repeat 3]

Builds --n COCO-like captions deterministically (seeded): one or two sentences from COCO object names,
synonyms, plurals, double words ("hot dog", "teddy bear"), numbers, commas, and now and then a quote, a
contraction or an abbreviation, so both the plain fast path and the full Treebank/Punkt path are timed.
Prints the best of --repeat timings of `reward.chair.chair_scores` over all captions (the per-caption
result included), pinned to one CPU where the OS allows.

If nltk 3.2.5 (with its punkt data) and Pattern 3.6 happen to be importable, it also checks that halign's
tokens and singular forms equal theirs on every caption (--check); nothing else needs them.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reward.chair import chair_scores  # noqa: E402
from reward.vocab import load_vocabulary  # noqa: E402

ADJECTIVES = ("small", "large", "red", "white", "black", "wooden", "old", "young", "brown", "green", "tall",
              "empty", "busy", "little", "big", "yellow", "blue", "colorful", "dirty", "clean")
VERBS = ("sitting on", "standing next to", "holding", "riding", "eating", "walking past", "parked near",
         "lying on", "looking at", "playing with", "flying over", "hanging above", "on top of", "in front of")
PLACES = ("a street", "the beach", "a field", "a kitchen", "a living room", "the snow", "a park", "a table",
          "the water", "a city", "a road", "the grass", "a bathroom", "an airport")
NUMBERS = ("two", "three", "several", "many", "a few", "2", "4")
EXTRAS = ('"', "isn't", "can't", "mr.", "etc.", "(", ")", ";", "--", "?", "!", "1,000", "3.5", "don't", "it's")


def plural(word: str) -> str:
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def build_captions(n: int, seed: int = 0) -> tuple[list[dict], dict]:
    """n COCO-like caption records over n // 5 images, and a ground truth for those images."""
    rng = random.Random(seed)
    vocab = load_vocabulary("coco")
    forms = [f for obj in vocab.objects for f in vocab.forms(obj)]
    common = ["man", "woman", "person", "dog", "cat", "car", "bus", "table", "pizza", "giraffe", "train",
              "people", "horse", "plate", "bench", "kite", "umbrella", "laptop", "hot dog", "teddy bear"]

    def noun() -> str:
        word = rng.choice(common) if rng.random() < 0.5 else rng.choice(forms)
        return word

    def phrase() -> str:
        r = rng.random()
        if r < 0.3:
            return f"{rng.choice(NUMBERS)} {rng.choice(ADJECTIVES)} {plural(noun())}"
        if r < 0.7:
            return f"a {rng.choice(ADJECTIVES)} {noun()}"
        return f"the {noun()}"

    def sentence() -> str:
        r = rng.random()
        if r < 0.4:
            s = f"{phrase()} {rng.choice(VERBS)} {phrase()}"
        elif r < 0.7:
            s = f"{phrase()}, {phrase()} and {phrase()} in {rng.choice(PLACES)}"
        elif r < 0.85:
            s = f"there is {phrase()} {rng.choice(VERBS)} {rng.choice(PLACES)}"
        else:
            s = f"{phrase()} {rng.choice(VERBS)} {phrase()} {rng.choice(EXTRAS)} {phrase()}"
        return s[0].upper() + s[1:]

    n_images = max(1, n // 5)
    captions = []
    for i in range(n):
        text = sentence() + rng.choice((".", ".", ".", "", " ."))
        if rng.random() < 0.25:
            text += " " + sentence() + "."
        captions.append({"image_id": i % n_images, "caption": text})
    truth = {i: set(rng.sample(vocab.objects, rng.randint(1, 6))) | {"person"} for i in range(n_images)}
    return captions, truth


def pin_one_core() -> str:
    if hasattr(os, "sched_setaffinity"):
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    return "not pinned (no sched_setaffinity)"


def check_against_reference(captions: list[dict]) -> str:
    """Tokens and singular forms equal nltk 3.2.5 + Pattern 3.6 on every caption (when both import)."""
    try:
        import nltk
        from pattern.en import singularize as pattern_singularize
    except Exception as e:  # the reference stack is optional
        return f"reference check skipped ({type(e).__name__}: {e})"
    from reward.singular import singularize
    from reward.text import word_tokenize
    t0 = time.perf_counter()
    for rec in captions:
        low = rec["caption"].lower()
        ref = nltk.word_tokenize(low)
        if word_tokenize(low) != ref:
            return f"MISMATCH in tokens of {rec['caption']!r}"
        if [singularize(w) for w in ref] != [pattern_singularize(w) for w in ref]:
            return f"MISMATCH in singular forms of {rec['caption']!r}"
    dt = time.perf_counter() - t0
    return f"reference check passed on {len(captions)} captions (nltk {nltk.__version__}; {dt:.1f} s)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=60000, help="number of captions (at least 50000 for the record)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs; the best is reported")
    parser.add_argument("--check", action="store_true", help="also compare with nltk 3.2.5 + Pattern 3.6")
    args = parser.parse_args()

    where = pin_one_core()
    captions, truth = build_captions(args.n, args.seed)
    distinct = len({c["caption"] for c in captions})
    chair_scores(captions[:1000], truth)  # compile the vocabulary outside the timing
    best = None
    result = None
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        result = chair_scores(captions, truth)
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    print(f"{args.n} captions ({distinct} distinct), reference mode, coco vocabulary, {where}")
    print(f"CHAIR_s {100 * result['chair_s']:.2f}%  CHAIR_i {100 * result['chair_i']:.2f}%  "
          f"({result['n_mentions']} mentions)")
    print(f"best of {args.repeat}: {best:.2f} s = {args.n / best:,.0f} captions/s")
    if args.check:
        print(check_against_reference(captions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
