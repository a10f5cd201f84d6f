"""Stage 1: teach the vision side to see before any captioning.

mode=boxes (the demo's tiny VLM): a tiny tower trained only through the caption loss does not learn to
see in CPU minutes, so the tower is trained directly on the box annotations: every patch predicts the
kind and the colour of the object covering it, and the pooled image predicts which kinds are present.
The heads are thrown away afterwards; the tower keeps what it learned.

mode=projector (real checkpoints, LLaVA's stage 1): only the multimodal projector trains, on caption
rows, with the vision tower and the language model frozen. That is SFT with everything but the projector
frozen, so it runs through align/sft.py.

    halign pretrain --config configs/demo/pretrain.yaml
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trl import SFTConfig

from align.config import DataFields, ModelFields, cpu_defaults, parse_config
from reward.files import InputError, atomic_path, write_json


@dataclass
class PretrainConfig(ModelFields, DataFields, SFTConfig):
    """Pretraining: the vision tower on box annotations (mode=boxes) or projector alignment (mode=projector)."""
    mode: str = field(default="boxes", metadata={"help": "boxes | projector"})
    annotations: str = field(default="", metadata={"help": "COCO instances JSON with boxes (mode=boxes)"})
    eval_annotations: str | None = field(default=None, metadata={"help": "held-out COCO instances to score"})
    colour_key: str = field(default="colour", metadata={"help": "annotation key with the object's colour"})
    freeze_vision_tower: bool = False

    def __post_init__(self):
        cpu_defaults(self)
        super().__post_init__()
        if self.mode not in ("boxes", "projector"):
            raise InputError(f"mode {self.mode!r} is not a pretraining mode", fix="use boxes or projector")


# ---------------------------------------------------------------- box targets (pure)
def box_targets(coco: dict, grid: int, colours: list[str], colour_key: str, file: str):
    """Per image: kind per patch (0 = background), colour per patch (0 = none), presence per kind."""
    cats = {c["id"]: i for i, c in enumerate(coco["categories"])}
    colour_ids = {c: i + 1 for i, c in enumerate(colours)}
    images = {im["id"]: im for im in coco["images"]}
    kinds = {i: [0] * (grid * grid) for i in images}
    cols = {i: [0] * (grid * grid) for i in images}
    present = {i: [0.0] * len(cats) for i in images}
    best = {i: [0.0] * (grid * grid) for i in images}
    for n, ann in enumerate(coco["annotations"]):
        im = images.get(ann["image_id"])
        if im is None or ann["category_id"] not in cats:
            raise InputError("annotation points at an unknown image or category", file=file,
                             record=f"annotation {ann.get('id', n)}", fix="repair the annotations file")
        x, y, w, h = ann["bbox"]
        k = cats[ann["category_id"]]
        present[ann["image_id"]][k] = 1.0
        pw, ph = im["width"] / grid, im["height"] / grid
        for gy in range(grid):
            for gx in range(grid):
                # a patch belongs to the object covering most of it (at least a quarter): with large
                # patches, small objects would otherwise miss every patch centre
                ox = max(0.0, min(x + w, (gx + 1) * pw) - max(x, gx * pw))
                oy = max(0.0, min(y + h, (gy + 1) * ph) - max(y, gy * ph))
                share = ox * oy / (pw * ph)
                i = gy * grid + gx
                if share >= 0.25 and share > best[ann["image_id"]][i]:
                    best[ann["image_id"]][i] = share
                    kinds[ann["image_id"]][i] = k + 1
                    cols[ann["image_id"]][i] = colour_ids.get(ann.get(colour_key), 0)
    return kinds, cols, present


def _load_split(path: str, images_dir: Path, processor, grid: int, colours: list[str], colour_key: str):
    import torch
    from PIL import Image

    from reward.files import read_json

    coco = read_json(path, "COCO instances file")
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise InputError(f"no {key!r} list", file=path, fix="pass a COCO instances_*.json file")
    kinds, cols, present = box_targets(coco, grid, colours, colour_key, path)
    ids = [im["id"] for im in coco["images"]]
    pixels = []
    for start in range(0, len(ids), 256):
        batch = []
        for im in coco["images"][start:start + 256]:
            f = images_dir / im["file_name"]
            try:
                batch.append(Image.open(f).convert("RGB"))
            except (OSError, ValueError) as e:
                raise InputError(f"cannot read image ({e})", file=f, record=f"image {im['id']}",
                                 fix="re-create the image or remove its record") from None
        pixels.append(processor.image_processor(batch, return_tensors="pt")["pixel_values"])
    return (torch.cat(pixels), torch.tensor([kinds[i] for i in ids]), torch.tensor([cols[i] for i in ids]),
            torch.tensor([present[i] for i in ids]), [c["name"] for c in coco["categories"]])


def vision_tower(model):
    inner = getattr(model, "model", model)
    for name in ("vision_tower", "vision_model", "visual"):
        if hasattr(inner, name):
            return getattr(inner, name)
    raise InputError(f"{type(model).__name__} has no vision tower this stage knows",
                     fix="use mode=projector for this family")


def train_boxes(cfg: PretrainConfig) -> dict:
    import torch
    from tqdm.auto import tqdm

    from align.modeling import load_model_and_processor

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, processor = load_model_and_processor(cfg)
    tower = vision_tower(model)
    vcfg = tower.config
    grid = vcfg.image_size // vcfg.patch_size
    images_dir = Path(cfg.images_dir or Path(cfg.annotations).parent)
    colours = _colours(cfg.annotations, cfg.colour_key)
    px, kinds, cols, present, names = _load_split(cfg.annotations, images_dir, processor, grid, colours,
                                                  cfg.colour_key)
    d = vcfg.hidden_size
    heads = torch.nn.ModuleDict({"kind": torch.nn.Linear(d, len(names) + 1),
                                 "colour": torch.nn.Linear(d, len(colours) + 1),
                                 "present": torch.nn.Linear(d, len(names))})
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(len(px) / cfg.per_device_train_batch_size *
                                                               cfg.num_train_epochs)
    w = cfg.warmup_steps or 0.05   # transformers: a float < 1 is a ratio of the steps
    warmup = max(1, int(steps * w) if w < 1 else int(w))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))

    def forward(pix):
        hidden = tower(pixel_values=pix).last_hidden_state[:, -grid * grid:]
        return heads["kind"](hidden), heads["colour"](hidden), heads["present"](hidden.mean(1))

    tower.train()
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(steps), desc="pretrain/boxes", unit="step")
    t0 = time.time()
    for step in bar:
        idx = torch.randint(len(px), (cfg.per_device_train_batch_size,), generator=gen)
        k_logits, c_logits, p_logits = forward(px[idx])
        loss = (torch.nn.functional.cross_entropy(k_logits.flatten(0, 1), kinds[idx].flatten())
                + torch.nn.functional.cross_entropy(c_logits.flatten(0, 1), cols[idx].flatten())
                + torch.nn.functional.binary_cross_entropy_with_logits(p_logits, present[idx]))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        if step % max(1, cfg.logging_steps) == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    metrics = {"train_loss": round(loss.item(), 4), "steps": steps, "train_seconds": round(time.time() - t0, 1)}
    if cfg.eval_annotations:
        epx, ekinds, ecols, epresent, _ = _load_split(cfg.eval_annotations,
                                                      Path(cfg.images_dir or Path(cfg.eval_annotations).parent),
                                                      processor, grid, colours, cfg.colour_key)
        tower.eval()
        with torch.no_grad():
            k_logits, c_logits, p_logits = zip(*(forward(epx[i:i + 256]) for i in range(0, len(epx), 256)))
        pred = torch.cat(p_logits) > 0
        metrics["presence_accuracy"] = round((pred == epresent.bool()).float().mean().item(), 4)
        metrics["presence_accuracy_per_kind"] = {
            n: round(v, 4) for n, v in zip(names, (pred == epresent.bool()).float().mean(0).tolist())}
        metrics["patch_kind_accuracy"] = round((torch.cat(k_logits).argmax(-1) == ekinds).float().mean().item(), 4)
        metrics["patch_colour_accuracy"] = round((torch.cat(c_logits).argmax(-1) == ecols).float().mean().item(), 4)
    save_checkpoint(model, processor, Path(cfg.output_dir) / "model")
    write_json(Path(cfg.output_dir) / "metrics.json", metrics)
    return metrics


def _colours(path: str, key: str) -> list[str]:
    from reward.files import read_json
    return sorted({a[key] for a in read_json(path, "COCO instances file")["annotations"] if key in a})


def save_checkpoint(model, processor, out: Path) -> Path:
    """save_pretrained into a temporary folder, renamed into place: never a half-written checkpoint."""
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    return out


def run(cfg: PretrainConfig) -> dict:
    if cfg.mode == "boxes":
        if not cfg.annotations:
            raise InputError("mode=boxes needs `annotations` (COCO instances with boxes)",
                             file=getattr(cfg, "config_path", None))
        return train_boxes(cfg)
    from align.sft import run_sft
    cfg.freeze_vision_tower, cfg.freeze_language_model, cfg.freeze_projector = True, True, False
    return run_sft(cfg)


def main(argv: list[str]) -> int:
    cfg = parse_config(PretrainConfig, argv, "pretrain")
    metrics = run(cfg)
    print(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, dict)}), file=sys.stdout)
    return 0
