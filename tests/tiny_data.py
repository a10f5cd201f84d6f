"""A few grounded shape images with SFT rows and preference pairs mined by `halign data pairs` (tests only).

The pairs come from data_prep's real miner (inject + image strategies), so the DPO tests train on exactly
the file format the pipeline writes, `rejected_images` (corrupted copies) included. Images have several
sizes and aspect ratios: Qwen2-VL and Idefics3 give them different numbers of image tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

SCENES = [  # (size, [(shape, colour, box x, y, w, h)], caption)
    ((32, 32), [("circle", "red", 4, 4, 12, 12)], "There is a red circle."),
    ((64, 32), [("square", "blue", 6, 6, 14, 14), ("triangle", "green", 36, 8, 16, 16)],
     "A blue square and a green triangle."),
    ((32, 64), [("star", "yellow", 8, 8, 14, 14)], "There is a yellow star."),
    ((48, 48), [("heart", "purple", 10, 10, 20, 20), ("circle", "orange", 30, 30, 12, 12)],
     "A purple heart and an orange circle."),
    ((40, 56), [("diamond", "green", 6, 6, 20, 20)], "There is a green diamond."),
    ((64, 64), [("ring", "blue", 8, 8, 20, 20), ("moon", "red", 36, 36, 18, 18)], "A blue ring and a red moon."),
]
RGB = {"red": (220, 45, 45), "green": (45, 185, 70), "blue": (55, 95, 235), "yellow": (235, 215, 45),
       "purple": (155, 65, 210), "orange": (245, 140, 30)}


def write_images_and_annotations(root: Path) -> Path:
    from PIL import Image, ImageDraw

    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "annotations.jsonl", "w", encoding="utf-8") as f:
        for i, (size, shapes, caption) in enumerate(SCENES):
            image = Image.new("RGB", size, (245, 245, 245))
            draw = ImageDraw.Draw(image)
            for _, colour, x, y, w, h in shapes:
                draw.ellipse([x, y, x + w, y + h], fill=RGB[colour])
            name = f"images/{i:03d}.png"
            image.save(root / name)
            f.write(json.dumps({"image_id": i, "image": name, "captions": [caption],
                                "objects": [{"name": s, "bbox": [x, y, w, h]} for s, _, x, y, w, h in shapes]}) + "\n")
    return root / "annotations.jsonl"


def write_sft_rows(root: Path) -> Path:
    out = root / "sft.jsonl"
    with open(out, "w", encoding="utf-8") as f:
        for i, (_, _, caption) in enumerate(SCENES):
            f.write(json.dumps({"images": [f"images/{i:03d}.png"], "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]},
                {"role": "assistant", "content": [{"type": "text", "text": caption}]}]}) + "\n")
    return out


def write_pairs(root: Path, strategies=("inject", "image")) -> Path:
    """Mine pairs with data_prep (the real producer); returns the pairs JSONL."""
    from data_prep.pairs import pairs_command

    out = root / "pairs" / "pairs.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    pairs_command(annotations=root / "annotations.jsonl", images=root, out=out, strategy=list(strategies),
                  vocab="shapes", seed=0, corruptions=["noise", "blur"])
    return out


def build_world(root) -> dict[str, Path]:
    """Images, annotations, SFT rows and pairs under root (built once per folder)."""
    root = Path(root)
    if not (root / "pairs" / "pairs.jsonl").is_file():
        write_images_and_annotations(root)
        write_sft_rows(root)
        write_pairs(root)
    return {"root": root, "sft": root / "sft.jsonl", "pairs": root / "pairs" / "pairs.jsonl"}
