"""Conversation rows with images (SFT data) from JSONL into a `datasets.Dataset` that TRL can train on.

Row layout (TRL's conversational vision format, image paths relative to an images folder):
    {"images": ["images/train/000001.png"], "messages": [{"role": "user", "content": [...]}, ...]}
An optional "weight" (> 0, default 1) scales the row's supervised tokens in the SFT loss.
Every row is checked on load (fields, roles, image files inside the folder) so that a bad row is reported
with its file and line before any training starts, never as a traceback mid-run.
"""
from __future__ import annotations

from pathlib import Path

from reward.files import InputError, iter_records

ROLES = {"system", "user", "assistant"}


def resolve_image(images_dir: Path, rel: str, file, record) -> Path:
    """`images_dir / rel`, refusing paths that escape the folder (absolute paths, `..`)."""
    root = images_dir.resolve()
    path = (root / rel).resolve()
    if root != path and root not in path.parents:
        raise InputError(f"image path {rel!r} escapes the images folder {images_dir}", file=file, record=record,
                         fix="use paths relative to the images folder")
    if not path.is_file():
        raise InputError(f"image file {rel!r} not found under {images_dir}", file=file, record=record,
                         fix="check images_dir or the path in the record")
    return path


def verify_image(path: Path, file, record) -> None:
    """A truncated or corrupt image would otherwise crash the collator in the middle of training."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()          # structure and checksums, without decoding the pixels
        with Image.open(path) as im:
            im.getpixel((im.width - 1, im.height - 1))   # forces the last rows: catches truncation
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        raise InputError(f"image {path.name} cannot be read ({type(e).__name__}: {e})", file=file,
                         record=record, fix="re-create or remove the image (is it truncated?)") from None


def _check_messages(messages, file, record) -> None:
    if not isinstance(messages, list) or not messages:
        raise InputError("'messages' must be a non-empty list", file=file, record=record)
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES or "content" not in m:
            raise InputError("each message needs a role (system, user, assistant) and content", file=file,
                             record=record)
        if not isinstance(m["content"], (str, list)):
            raise InputError("message content must be a string or a list of parts", file=file, record=record)
    if not any(m["role"] == "assistant" for m in messages):
        raise InputError("no assistant message to learn from", file=file, record=record)


def load_conversations(path: str | Path, images_dir: str | Path | None = None, max_samples: int | None = None,
                       skip_bad: bool = False, decode: bool = True):
    """Read conversation rows, validate them, return a Dataset whose `images` decode to PIL on access.

    With decode=False the `images` column holds {"path", "bytes"} dicts (cheap to scan, e.g. for lengths);
    cast it later with `decode_images`."""
    from datasets import Dataset, Image, Sequence

    path = Path(path)
    images_dir = Path(images_dir) if images_dir else path.parent
    rows, skipped, verified = [], 0, set()
    for line, rec in iter_records(path, "conversations file"):
        record = f"line {line}"
        try:
            if "messages" not in rec:
                raise InputError("missing field 'messages'", file=path, record=record,
                                 fix="write rows as {\"images\": [...], \"messages\": [...]}")
            _check_messages(rec["messages"], path, record)
            images = rec.get("images", [rec["image"]] if "image" in rec else [])
            if not isinstance(images, list):
                raise InputError("'images' must be a list of paths", file=path, record=record)
            files = [str(resolve_image(images_dir, rel, path, record)) for rel in images]
            for f in files:
                if f not in verified:
                    verify_image(Path(f), path, record)
                    verified.add(f)
            n_slots = sum(1 for m in rec["messages"] if isinstance(m["content"], list)
                          for p in m["content"] if isinstance(p, dict) and p.get("type") == "image")
            if n_slots and n_slots != len(files):
                raise InputError(f"{n_slots} image slots in the messages but {len(files)} images", file=path,
                                 record=record, fix="give one image per {\"type\": \"image\"} part")
            weight = rec.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < float("inf"):
                raise InputError(f"'weight' must be a positive number, not {weight!r}", file=path, record=record,
                                 fix="give the row's loss weight as a number > 0, or leave it out (1)")
        except InputError:
            if not skip_bad:
                raise
            skipped += 1
            continue
        rows.append({"images": files, "messages": rec["messages"], "weight": float(weight)})
        if max_samples and len(rows) >= max_samples:
            break
    if not rows:
        raise InputError("no usable rows", file=path, fix="check the file's contents")
    if all(r["weight"] == 1.0 for r in rows):   # the common case: no column, nothing for a trainer to carry
        rows = [{"images": r["images"], "messages": r["messages"]} for r in rows]
    ds = Dataset.from_list(rows)
    ds = ds.cast_column("images", Sequence(Image(decode=decode)))
    ds.info.description = f"{len(rows)} rows from {path}; {skipped} skipped"
    return ds


def decode_images(ds, column: str = "images"):
    from datasets import Image, Sequence
    return ds.cast_column(column, Sequence(Image()))


def image_sizes(images: list) -> list[tuple[int, int]]:
    """Sizes of undecoded image entries ({"path": ...}) from the file headers only."""
    from PIL import Image as PILImage

    sizes = []
    for im in images:
        with PILImage.open(im["path"]) as f:
            sizes.append(f.size)
    return sizes
