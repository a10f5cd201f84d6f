#!/usr/bin/env python
"""Benchmark `inject` pair mining on a COCO train2017-sized annotation set (issue 4: < 60 s, < 2 GB).

Generates, deterministically and once per size, a synthetic COCO instances file (118,287 images,
860,001 instances with boxes and small polygons, the 80 COCO categories with a co-occurrence structure)
and a captions file (5 captions per image, some naming an absent object the way noisy captions do), in a
temp folder. No image files: the run uses check_images=False. Then it runs load + mine + write in a fresh
process, as `halign data pairs` does, and prints the wall time, pairs/s and the peak resident memory of
that process (ru_maxrss).

    python scripts/bench_pairs.py [--images 118287] [--instances 860001] [--dir /tmp/halign-bench]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def generate(folder: Path, n_images: int, n_instances: int, seed: int = 0) -> tuple[Path, Path]:
    from reward.vocab import load_vocabulary

    instances, captions = folder / "instances_bench.json", folder / "captions_bench.json"
    stamp = folder / f"done-{n_images}-{n_instances}-{seed}"
    if stamp.exists():
        return instances, captions
    folder.mkdir(parents=True, exist_ok=True)
    vocab = load_vocabulary("coco")
    cats = list(vocab.objects)
    rng = random.Random(seed)
    # co-occurrence structure: 16 "scenes", each favouring a handful of categories
    scenes = [rng.sample(cats, 6) for _ in range(16)]
    popularity = [1.0 / (1 + i) ** 0.8 for i in range(len(cats))]  # Zipf-like: a long tail
    # instances per image: spread n_instances over n_images (1..19 boxes, mean n_instances / n_images)
    per_image = [1] * n_images
    for _ in range(n_instances - n_images):
        per_image[rng.randrange(n_images)] += 1
    templates = ["A {a} next to a {b}.", "There is a {a} and a {b} in the picture.", "A {a} with a {b} nearby.",
                 "Two {a}s near a {b}.", "A photo of a {a}."]
    with open(instances, "w") as fi, open(captions, "w") as fc:
        fi.write('{"info": {"description": "halign benchmark"}, "licenses": [], "images": [\n')
        fc.write('{"info": {}, "images": [], "annotations": [\n')
        for i in range(n_images):
            fi.write(("," if i else "") + json.dumps({"id": i + 1, "file_name": f"{i + 1:012d}.jpg",
                                                        "width": 640, "height": 480}) + "\n")
        fi.write('], "annotations": [\n')
        ann_id, cap_id, first = 0, 0, True
        for i in range(n_images):
            scene = scenes[rng.randrange(len(scenes))]
            names = []
            for _ in range(per_image[i]):
                names.append(rng.choice(scene) if rng.random() < 0.7 else rng.choices(cats, popularity)[0])
                x, y = rng.uniform(0, 500), rng.uniform(0, 380)
                w, h = rng.uniform(5, 640 - x), rng.uniform(5, 480 - y)
                poly = [round(v, 2) for _ in range(8) for v in (x + rng.uniform(0, w), y + rng.uniform(0, h))]
                ann_id += 1
                rec = {"segmentation": [poly], "area": round(w * h, 2), "iscrowd": 0, "image_id": i + 1,
                       "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                       "category_id": cats.index(names[-1]) + 1, "id": ann_id}
                fi.write(("" if first else ",") + json.dumps(rec) + "\n")
                first = False
            distinct = list(dict.fromkeys(names))
            for k in range(5):
                a = rng.choice(distinct)
                b = rng.choice(distinct) if rng.random() < 0.8 else rng.choice(scene)  # ~20 % may hallucinate
                cap_id += 1
                fc.write(("," if cap_id > 1 else "") + json.dumps(
                    {"image_id": i + 1, "id": cap_id, "caption": _articles(templates[k].format(a=a, b=b))}) + "\n")
        fi.write('], "categories": [' + ", ".join(
            json.dumps({"supercategory": "thing", "id": j + 1, "name": c}) for j, c in enumerate(cats)) + "]}\n")
        fc.write("]}\n")
    stamp.touch()
    return instances, captions


def _articles(text: str) -> str:
    import re
    return re.sub(r"\b([Aa]) (?=[aeiou])", lambda m: m.group(1) + "n ", text)


def run_child(instances: str, captions: str, out: str, seed: int) -> None:
    """Load + mine + write in this (fresh) process and print one JSON line of measurements."""
    from data_prep.pairs import pairs_command

    t0 = time.perf_counter()
    pairs_command(Path(instances), Path(tempfile.gettempdir()), Path(out), ["inject"], captions=Path(captions),
                  seed=seed, check_images=False)
    dt = time.perf_counter() - t0
    n = sum(1 for _ in open(out))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    print(json.dumps({"pairs": n, "seconds": round(dt, 2), "peak_bytes": peak}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=118_287)
    ap.add_argument("--instances", type=int, default=860_001)
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "halign-bench")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(*args.child, seed=args.seed)
        return 0
    t0 = time.perf_counter()
    instances, captions = generate(args.dir, args.images, args.instances)
    size = instances.stat().st_size / 2**20
    print(f"annotations: {args.images} images, {args.instances} instances, {size:.0f} MiB "
          f"(+ captions {captions.stat().st_size / 2**20:.0f} MiB) in {args.dir} "
          f"[{time.perf_counter() - t0:.0f}s]", flush=True)
    out = args.dir / "pairs.jsonl"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--seed", str(args.seed), "--child", str(instances),
                           str(captions), str(out)], env=env, capture_output=True, text=True)
    sys.stderr.write(proc.stderr[-2000:] if proc.returncode else "")
    if proc.returncode:
        return proc.returncode
    lines = proc.stdout.strip().splitlines()
    print("\n".join(lines[:-1]))
    m = json.loads(lines[-1])
    print(f"inject: {m['pairs']} pairs in {m['seconds']:.1f} s (load + mine + write) = "
          f"{m['pairs'] / m['seconds']:.0f} pairs/s; peak memory {m['peak_bytes'] / 2**30:.2f} GiB "
          f"(targets: < 60 s, < 2 GiB)")
    return 0 if m["seconds"] < 60 and m["peak_bytes"] < 2 * 2**30 else 1


if __name__ == "__main__":
    sys.exit(main())
