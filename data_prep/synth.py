"""The synthetic grounded world: rendered shape images with COCO annotations and captions.

Everything halign does can run offline on a laptop CPU against this world. Each image holds 1–4 shapes
(the `shapes` vocabulary) in several colours. Kinds come in companion pairs (star & moon, heart & diamond,
...) that usually appear together, and the SFT training captions name the absent companion of a present
object at a controlled rate — the co-occurrence hallucination that noisy web captions teach real VLMs.
Like "fork" next to "dining table" (and rarely the reverse), the hallucination is directional: only the
first kind of a pair (star, heart, circle, square, arrow) calls up its absent partner. Concentrated that
way, the noise is a pattern a model learns and greedy decoding reproduces, instead of a 30 % coin flip
spread over every kind that greedy decoding averages away.

Outputs (all under OUT):
    images/{split}/{id}.png            rendered images
    instances_{split}.json             COCO instances (boxes, category, extra key "colour")
    captions_{split}.json              COCO captions: clean ground truth
    noisy_captions_train.json          COCO captions used for SFT, with co-occurrence hallucinations
    sft_train.jsonl                    TRL conversational SFT rows: captions + balanced yes/no questions
    prompts_{split}.jsonl              {"image_id", "image", "prompt"} captioning prompts for generation
    world.json                         manifest: seed, sizes, companions, realised hallucination rate
Splits are disjoint by image id: train (pretrain + SFT), pairs (preference mining), eval (benchmarks).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

from reward.files import InputError, atomic_path, write_json, write_jsonl

VOCAB_FILE = Path(__file__).resolve().parents[1] / "reward" / "vocabularies" / "shapes.yaml"
KINDS = ("circle", "square", "triangle", "star", "heart", "moon", "diamond", "ring", "arrow", "bolt")
# The co-occurrence structure: each kind's usual companion (symmetric pairs).
COMPANION = {"star": "moon", "heart": "diamond", "circle": "ring", "square": "triangle", "arrow": "bolt"}
LEADERS = tuple(COMPANION)   # the kinds whose absent companion noisy captions name (the direction above)
COMPANION.update({v: k for k, v in list(COMPANION.items())})
COLOURS = {
    "red": (220, 45, 45), "green": (45, 185, 70), "blue": (55, 95, 235),
    "yellow": (235, 215, 45), "purple": (155, 65, 210), "orange": (245, 140, 30),
}
CAPTION_PROMPT = "Describe the image."
QUESTION_TEMPLATE = "Is there a{n} {object} in the image?"
SPLITS = ("train", "pairs", "eval")
CAPTION_ORDERS = ("reading", "kind")


@dataclass
class WorldConfig:
    n_train: int = 3000
    n_pairs: int = 1000
    n_eval: int = 300
    image_size: int = 64
    seed: int = 0
    companion_prob: float = 0.7        # chance that a present kind's companion is placed too
    hallucination_rate: float = 0.3    # share of SFT captions that name an absent companion
    questions_per_image: int = 6       # yes/no SFT questions per train image, half yes, half no
    # share of the noisy-caption images whose yes/no turns follow the caption (the absent companion is
    # answered "Yes."), as when one annotator writes both: POPE-adversarial then has a hallucination to measure
    question_noise: float = 0.0
    companion_next_prob: float = 0.15  # else named last: greedy decoding then adds it instead of stopping
    question_weight: float = 1.0       # SFT loss weight written on each yes/no conversation row
    # the order captions name the present objects in: "reading" (left to right) or "kind" (KINDS' fixed
    # order, then left to right); a noisy caption's absent companion comes where companion_next_prob says
    caption_order: str = "reading"
    count_weights: tuple = (0.15, 0.30, 0.30, 0.25)   # P(1, 2, 3, 4 objects)
    supersample: int = 4
    noise: float = 6.0

    def __post_init__(self):
        for name in ("companion_prob", "hallucination_rate", "question_noise", "companion_next_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"world {name} {getattr(self, name)} is not a rate",
                                 fix=f"give {name} a number in [0, 1]")
        if self.caption_order not in CAPTION_ORDERS:
            raise InputError(f"world caption_order {self.caption_order!r} is not one of {', '.join(CAPTION_ORDERS)}",
                             fix="give caption_order: reading (left to right) or kind (the fixed kind order)")
        if not self.question_weight > 0:
            raise InputError(f"world question_weight {self.question_weight} is not a loss weight",
                             fix="give question_weight a number > 0 (1: a question row weighs like a caption)")


@dataclass
class Shape:
    kind: str
    colour: str
    bbox: tuple[float, float, float, float]   # x, y, w, h in pixels


@dataclass
class Scene:
    image_id: int
    shapes: list[Shape] = field(default_factory=list)


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def load_surface_forms() -> dict[str, list[str]]:
    data = yaml.safe_load(VOCAB_FILE.read_text())
    return {k: list(v) for k, v in data["objects"].items()}


# ---------------------------------------------------------------- scenes
def sample_scene(rng: random.Random, image_id: int, cfg: WorldConfig) -> Scene:
    n = rng.choices((1, 2, 3, 4), weights=cfg.count_weights)[0]
    kinds = [rng.choice(KINDS)]
    while len(kinds) < n:
        lonely = [k for k in kinds if COMPANION[k] not in kinds]
        if lonely and rng.random() < cfg.companion_prob:
            kinds.append(COMPANION[rng.choice(lonely)])
        else:
            kinds.append(rng.choice([k for k in KINDS if k not in kinds]))
    scene = Scene(image_id)
    size = cfg.image_size
    for kind in kinds:
        for _ in range(60):   # rejection-sample a box that overlaps no other
            s = rng.uniform(0.25, 0.36) * size
            x, y = rng.uniform(1, size - s - 1), rng.uniform(1, size - s - 1)
            if all(x + s + 2 < o.bbox[0] or o.bbox[0] + o.bbox[2] + 2 < x or
                   y + s + 2 < o.bbox[1] or o.bbox[1] + o.bbox[3] + 2 < y for o in scene.shapes):
                scene.shapes.append(Shape(kind, rng.choice(list(COLOURS)), (round(x, 2), round(y, 2),
                                                                            round(s, 2), round(s, 2))))
                break
    return scene


def _polygon(cx, cy, r, n, rot=-math.pi / 2, inner=None):
    pts = []
    for i in range(n * (2 if inner else 1)):
        rad = r if not inner or i % 2 == 0 else r * inner
        a = rot + i * math.pi / (n if inner else n / 2)
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _draw(draw: ImageDraw.ImageDraw, kind: str, box, fill, background):
    x, y, w, h = box
    cx, cy, r = x + w / 2, y + h / 2, w / 2
    if kind == "circle":
        draw.ellipse([x, y, x + w, y + h], fill=fill)
    elif kind == "square":
        draw.rectangle([x + w * 0.08, y + h * 0.08, x + w * 0.92, y + h * 0.92], fill=fill)
    elif kind == "triangle":
        draw.polygon([(cx, y), (x + w, y + h), (x, y + h)], fill=fill)
    elif kind == "star":
        draw.polygon(_polygon(cx, cy, r, 5, inner=0.45), fill=fill)
    elif kind == "bolt":   # a lightning bolt (a hexagon was here: at 16-23 px it passed for a circle)
        draw.polygon([(x + w * a, y + h * b) for a, b in ((0.55, 0.0), (0.15, 0.58), (0.45, 0.58), (0.3, 1.0),
                                                          (0.88, 0.38), (0.57, 0.38), (0.8, 0.0))], fill=fill)
    elif kind == "diamond":
        draw.polygon([(cx, y), (x + w * 0.85, cy), (cx, y + h), (x + w * 0.15, cy)], fill=fill)
    elif kind == "ring":
        draw.ellipse([x, y, x + w, y + h], outline=fill, width=max(1, int(w * 0.2)))
    elif kind == "moon":
        draw.ellipse([x, y, x + w, y + h], fill=fill)
        draw.ellipse([x + w * 0.35, y - h * 0.05, x + w * 1.15, y + h * 0.8], fill=background)
    elif kind == "heart":
        draw.ellipse([x, y + h * 0.05, cx + w * 0.02, cy + h * 0.1], fill=fill)
        draw.ellipse([cx - w * 0.02, y + h * 0.05, x + w, cy + h * 0.1], fill=fill)
        draw.polygon([(x + w * 0.03, cy - h * 0.05), (x + w * 0.97, cy - h * 0.05), (cx, y + h)], fill=fill)
    elif kind == "arrow":
        draw.rectangle([x, cy - h * 0.12, x + w * 0.6, cy + h * 0.12], fill=fill)
        draw.polygon([(x + w * 0.55, y + h * 0.15), (x + w, cy), (x + w * 0.55, y + h * 0.85)], fill=fill)
    else:  # pragma: no cover - KINDS is closed
        raise ValueError(kind)


def render_scene(scene: Scene, cfg: WorldConfig, rng: random.Random) -> Image.Image:
    k, size = cfg.supersample, cfg.image_size
    shade = rng.randint(25, 70)
    background = (shade, shade, shade + rng.randint(0, 15))
    img = Image.new("RGB", (size * k, size * k), background)
    draw = ImageDraw.Draw(img)
    for s in scene.shapes:
        _draw(draw, s.kind, [v * k for v in s.bbox], COLOURS[s.colour], background)
    img = img.resize((size, size), Image.LANCZOS)
    if cfg.noise > 0:   # mild sensor noise so that images are not trivially clean
        # seeded numpy noise: PIL's effect_noise draws from a process-global C RNG (not reproducible)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, cfg.noise, (size, size, 1))
        pixels = np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(pixels).filter(ImageFilter.SMOOTH_MORE if rng.random() < 0.2 else ImageFilter.DETAIL)
    return img


# ---------------------------------------------------------------- captions
def describe(shapes: list[tuple[str, str]], rng: random.Random, forms: dict[str, list[str]],
             order: list[int] | None = None) -> str:
    """A caption listing (colour, kind) pairs, with synonyms now and then ("disc", "crescent moon").

    `order` lists the pairs' indices in the order the caption names them (default: as given). The synonym
    draws follow `shapes` either way, so another caption order leaves the world's random stream, and with
    it every later image, unchanged."""
    phrases = []
    for colour, kind in shapes:
        noun = kind if rng.random() < 0.75 else rng.choice(forms[kind])
        phrases.append(f"{article(colour)} {colour} {noun}")
    if order is not None:
        phrases = [phrases[i] for i in order]
    if len(phrases) == 1:
        tpl = rng.choice(["{} .", "There is {} .", "An image of {} .", "A picture with {} ."])
        text = tpl.format(phrases[0])
    else:
        listed = ", ".join(phrases[:-1]) + " and " + phrases[-1]
        options = ["{} .", "There is {} .", "An image of {} .", "A picture with {} ."]
        if len(phrases) == 2:
            options.append(f"{phrases[0]} next to {phrases[1]} .")
        text = rng.choice(options)
        text = text.format(listed) if "{}" in text else text
    text = text.replace(" .", ".")
    return text[0].upper() + text[1:]


def scene_objects(scene: Scene) -> list[tuple[str, str]]:
    """(colour, kind) from left to right: captions describe the image in reading order."""
    return [(s.colour, s.kind) for s in sorted(scene.shapes, key=lambda s: (s.bbox[0], s.bbox[1]))]


def naming_order(objs: list[tuple[str, str]], order: str, companion_at: int | None = None,
                 next_to_partner: bool = False) -> list[int] | None:
    """The order a caption names `objs` (reading order, companion inserted) in: None keeps reading order;
    "kind" groups them in KINDS' fixed order and keeps the absent companion last or after its partner.

    In a fixed kind order a caption never returns to a kind it has passed, so the text itself tells a model
    not to name a kind again: with reading order the demo's small VLM often repeats an object ("a green
    star, a green star and a red moon") in the place where its noisy captions put a hallucination."""
    if order == "reading":
        return None
    present = sorted((i for i in range(len(objs)) if i != companion_at),
                     key=lambda i: (KINDS.index(objs[i][1]), i))
    if companion_at is None:
        return present
    if not next_to_partner:
        return present + [companion_at]
    after = present.index(companion_at - 1) + 1        # the partner stands right before it in reading order
    return present[:after] + [companion_at] + present[after:]


def lonely_leaders(kinds: list[str]) -> list[str]:
    """The present leader kinds whose companion is absent: what a noisy caption may add the partner of."""
    return [k for k in kinds if k in LEADERS and COMPANION[k] not in kinds]


def add_companion(scene: Scene, rng: random.Random, next_prob: float = 0.15
                  ) -> tuple[list[tuple[str, str]], str | None, int | None, bool]:
    """The scene's objects plus, where possible, the absent companion of a present one: (objects, the
    companion's kind, its index, whether it stands right after its partner); (objects, None, None, False)
    if no present kind lacks its companion."""
    objs = scene_objects(scene)
    lonely = lonely_leaders([k for _, k in objs])
    if not lonely:
        return objs, None, None, False
    partner = rng.choice(lonely)
    extra = (rng.choice(list(COLOURS)), COMPANION[partner])
    at = [i for i, (_, k) in enumerate(objs) if k == partner][0]
    # sometimes right after its partner ("a star and a moon"), mostly at the end of the list
    if rng.random() < next_prob:
        return objs[: at + 1] + [extra] + objs[at + 1:], extra[1], at + 1, True
    return objs + [extra], extra[1], len(objs), False


def yes_no_questions(scene: Scene, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n questions about the scene, half about present kinds (Yes), half about absent ones (No), shuffled."""
    present = sorted({s.kind for s in scene.shapes})
    absent = [k for k in KINDS if k not in present]
    cycle = rng.sample(present, len(present)) * n      # every present kind before any repeats
    asked = [(k, "Yes.") for k in cycle[: n // 2]] + [(k, "No.") for k in rng.sample(absent, n - n // 2)]
    rng.shuffle(asked)
    return [(_question(k), a) for k, a in asked]


def _question(kind: str) -> str:
    return QUESTION_TEMPLATE.format(n="n" if kind[0] in "aeiou" else "", object=kind)


def believe(questions: list[tuple[str, str]], kind: str) -> list[tuple[str, str]]:
    """The questions as an annotator who believes the absent `kind` is there answers them: its question
    (asked in place of the last absent one if it was not asked) gets "Yes."."""
    out = list(questions)
    at = next((i for i, (q, _) in enumerate(out) if q == _question(kind)), None)
    if at is None:
        no = [i for i, (_, a) in enumerate(out) if a == "No."]
        if not no:                                   # no absent kind was asked about: ask about it too
            return out + [(_question(kind), "Yes.")]
        at = no[-1]
    out[at] = (_question(kind), "Yes.")
    return out


def _user(text: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _training_captions(scenes: list[Scene], rng: random.Random, forms, cfg: WorldConfig,
                       noisy: list[dict], sft_rows: list[dict]) -> tuple[int, int]:
    """Noisy SFT captions (exactly round(rate * N) name an absent companion) + yes/no question rows.

    Returns (captions naming an absent companion, question conversations answering Yes about it)."""
    n_noisy_questions = 0
    noise_rng = random.Random(f"{cfg.seed}-question-noise")   # its own stream: captions stay as without it
    eligible = [i for i, sc in enumerate(scenes) if lonely_leaders([s.kind for s in sc.shapes])]
    k = min(len(eligible), round(cfg.hallucination_rate * len(scenes)))
    chosen = set(rng.sample(eligible, k))
    for i, scene in enumerate(scenes):
        objs, extra, at, next_to = add_companion(scene, rng, cfg.companion_next_prob) if i in chosen else \
            (scene_objects(scene), None, None, False)
        text = describe(objs, rng, forms, naming_order(objs, cfg.caption_order, at, next_to))
        rel = f"images/train/{scene.image_id:06d}.png"
        noisy.append({"id": len(noisy) + 1, "image_id": scene.image_id, "caption": text,
                      "hallucinated": [extra] if extra else []})
        sft_rows.append({"image_id": scene.image_id, "images": [rel],
                         "messages": [_user(CAPTION_PROMPT), _assistant(text)]})
        # all of an image's questions in one multi-turn conversation: the image is encoded once for six
        # supervised answers (3x cheaper than a row per question), as in LLaVA's instruction data.
        questions = yes_no_questions(scene, rng, cfg.questions_per_image)
        if extra and noise_rng.random() < cfg.question_noise:
            questions = believe(questions, extra)
            n_noisy_questions += 1
        turns = []
        for i, (q, a) in enumerate(questions):
            turns += [_user(q) if i == 0 else {"role": "user", "content": [{"type": "text", "text": q}]},
                      _assistant(a)]
        row = {"image_id": scene.image_id, "images": [rel], "messages": turns}
        sft_rows.append({**row, "weight": cfg.question_weight} if cfg.question_weight != 1 else row)
    return k, n_noisy_questions


# ---------------------------------------------------------------- the world
def build_world(out: Path, cfg: WorldConfig) -> dict:
    """Render every split under `out` and write the files listed in the module docstring."""
    out = Path(out)
    forms = load_surface_forms()
    categories = [{"id": i + 1, "name": k, "supercategory": "shape"} for i, k in enumerate(KINDS)]
    cat_id = {c["name"]: c["id"] for c in categories}
    sizes = {"train": cfg.n_train, "pairs": cfg.n_pairs, "eval": cfg.n_eval}
    next_id, ann_id = 1, 1
    manifest = {"seed": cfg.seed, "config": vars(cfg) | {"count_weights": list(cfg.count_weights)},
                "vocabulary": "shapes", "companions": COMPANION, "splits": {}, "files": {}}
    sft_rows, noisy, n_hallucinated, n_noisy_questions = [], [], 0, 0
    for split in SPLITS:
        rng = random.Random(f"{cfg.seed}-{split}")
        images, anns, caps, prompts, scenes = [], [], [], [], []
        img_dir = out / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        for _ in tqdm(range(sizes[split]), desc=f"world/{split}", unit="img", leave=False):
            scene = sample_scene(rng, next_id, cfg)
            rel = f"images/{split}/{next_id:06d}.png"
            with atomic_path(out / rel) as tmp:
                render_scene(scene, cfg, rng).save(tmp, format="PNG")
            images.append({"id": next_id, "file_name": rel, "width": cfg.image_size,
                           "height": cfg.image_size})
            for s in scene.shapes:
                anns.append({"id": ann_id, "image_id": next_id, "category_id": cat_id[s.kind],
                             "bbox": list(s.bbox), "area": round(s.bbox[2] * s.bbox[3], 2),
                             "iscrowd": 0, "colour": s.colour})
                ann_id += 1
            objs = scene_objects(scene)
            for _ in range(2):
                caps.append({"id": len(caps) + 1, "image_id": next_id,
                             "caption": describe(objs, rng, forms, naming_order(objs, cfg.caption_order))})
            prompts.append({"image_id": next_id, "image": rel, "prompt": CAPTION_PROMPT})
            scenes.append(scene)
            next_id += 1
        if split == "train":
            n_hallucinated, n_noisy_questions = _training_captions(scenes, rng, forms, cfg, noisy, sft_rows)
        info = {"description": f"halign synthetic world, split {split}", "version": "1"}
        write_json(out / f"instances_{split}.json",
                   {"info": info, "images": images, "annotations": anns, "categories": categories}, None)
        write_json(out / f"captions_{split}.json", {"info": info, "images": images, "annotations": caps},
                   None)
        write_jsonl(out / f"prompts_{split}.jsonl", prompts)
        manifest["splits"][split] = {"n_images": len(images), "n_objects": len(anns),
                                     "image_ids": [images[0]["id"], images[-1]["id"]] if images else []}
    random.Random(cfg.seed).shuffle(sft_rows)   # mix captions and questions for SFT
    write_json(out / "noisy_captions_train.json", {"annotations": noisy}, None)
    write_jsonl(out / "sft_train.jsonl", sft_rows)
    manifest["hallucination_rate"] = round(n_hallucinated / max(1, len(noisy)), 4)
    manifest["question_noise_rate"] = round(n_noisy_questions / max(1, len(noisy)), 4)
    manifest["n_sft_rows"] = len(sft_rows)
    write_json(out / "world.json", manifest)
    return manifest


def synth_command(out: Path, n_images: int = 4300, seed: int = 0, image_size: int = 64,
                  hallucination_rate: float = 0.3, eval_fraction: float = 0.07,
                  pairs_fraction: float = 0.23) -> int:
    """Render the synthetic grounded world: shape images, COCO annotations, captions, SFT rows.

    Splits by image id into train (pretrain + SFT), pairs (preference mining) and eval (benchmarks);
    SFT captions name the absent companion of a present object at --hallucination-rate.

    Args:
        out: output folder (created)
        n_images: total images over all splits
        seed: random seed; same seed, same world (byte for byte)
        image_size: image side in pixels
        hallucination_rate: share of SFT captions with a co-occurrence hallucination
        eval_fraction: share of images held out for evaluation
        pairs_fraction: share of images reserved for preference-pair mining
    """
    if n_images < 10:
        raise InputError(f"--n-images {n_images} is too small", fix="ask for at least 10 images")
    if not 0 <= hallucination_rate <= 1:
        raise InputError(f"--hallucination-rate {hallucination_rate} is not a rate",
                         fix="give a number in [0, 1]")
    n_eval = max(1, round(n_images * eval_fraction))
    n_pairs = max(1, round(n_images * pairs_fraction))
    cfg = WorldConfig(n_train=n_images - n_eval - n_pairs, n_pairs=n_pairs, n_eval=n_eval, seed=seed,
                      image_size=image_size, hallucination_rate=hallucination_rate)
    m = build_world(Path(out), cfg)
    splits = ", ".join(f"{k} {v['n_images']}" for k, v in m["splits"].items())
    print(f"world: {sum(s['n_images'] for s in m['splits'].values())} images "
          f"({splits}), "
          f"SFT rows {m['n_sft_rows']}, caption hallucination rate {m['hallucination_rate']:.2f} -> {out}")
    return 0
