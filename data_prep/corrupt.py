"""Corrupted copies of an image for the `image` pair strategy (mDPO, POVID stage 2, SeVa).

Same text on both sides, chosen image = the real one, rejected image = a corrupted copy, so the model
is pushed to condition on the pixels rather than on the language prior. A corruption is a small dict
("spec") drawn by the miner from a seeded rng and stored in the pair record; `render_corruption` is a
pure function of the spec and the source image, so the files can be rebuilt and are byte-identical for
the same seed.
"""
from __future__ import annotations

import random
from pathlib import Path

CORRUPTIONS = ("crop", "noise", "blur", "mask")


def draw_corruption(kind: str, rng: random.Random, *, box=None, obj: str | None = None) -> dict:
    """A spec for `kind`. "mask" needs the object's box (COCO xywh in pixels)."""
    if kind == "crop":  # keep a window of 30-50 % of each side, scaled back to full size
        s = rng.uniform(0.3, 0.5)
        x0, y0 = rng.uniform(0, 1 - s), rng.uniform(0, 1 - s)
        return {"kind": "crop", "box": [round(x0, 4), round(y0, 4), round(x0 + s, 4), round(y0 + s, 4)]}
    if kind == "noise":  # heavy Gaussian pixel noise (SeVa uses diffusion noise of similar strength)
        return {"kind": "noise", "sigma": 0.4, "seed": rng.randrange(2**31)}
    if kind == "blur":
        return {"kind": "blur", "radius": 0.08}  # fraction of the longer side
    if kind == "mask":
        if box is None:
            raise ValueError("a mask corruption needs an object box")
        return {"kind": "mask", "object": obj, "bbox": [round(float(v), 2) for v in box]}
    raise ValueError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS}")


def render_corruption(src: str | Path, spec: dict, dst: str | Path) -> None:
    """Write the corrupted copy of image `src` described by `spec` to `dst` (PNG)."""
    import numpy as np
    from PIL import Image, ImageFilter

    with Image.open(src) as im:
        im = im.convert("RGB")
    w, h = im.size
    kind = spec["kind"]
    if kind == "crop":
        x0, y0, x1, y1 = spec["box"]
        box = (int(x0 * w), int(y0 * h), max(int(x1 * w), int(x0 * w) + 1), max(int(y1 * h), int(y0 * h) + 1))
        out = im.crop(box).resize((w, h), Image.Resampling.BILINEAR)
    elif kind == "noise":
        rng = np.random.default_rng(spec["seed"])
        arr = np.asarray(im, dtype=np.float32) / 255.0
        arr = arr + rng.normal(0.0, spec["sigma"], arr.shape).astype(np.float32)
        out = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))
    elif kind == "blur":
        out = im.filter(ImageFilter.GaussianBlur(radius=max(1.0, spec["radius"] * max(w, h))))
    elif kind == "mask":
        arr = np.asarray(im).copy()
        x, y, bw, bh = spec["bbox"]
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
        # fill with the image's mean colour: no tell-tale grey box for the model to key on
        arr[y0:y1, x0:x1] = arr.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
        out = Image.fromarray(arr)
    else:
        raise ValueError(f"unknown corruption {kind!r}")
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    out.save(dst, format="PNG")
