"""The generic grounded-annotations JSONL of DESIGN.md, one image a line (see annotations.py).

`{"image_id", "image", "objects": [{"name", "bbox": [x, y, w, h]}], "captions": [str]}`, optional
`"width"`/`"height"` (else read from the image header when the file is there); an object may be a bare
name when no box is known. A JSON list of such records is accepted too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from reward.files import InputError

from data_prep.annotations import (GroundedImage, GroundedObject, LoadedAnnotations, NameMapper, _bbox, _Checker,
                                   _escapes, _FileIndex)


def iter_jsonl(path: Path, checker: _Checker) -> Iterator[tuple[str, Any]]:
    """(record label, parsed object) per non-blank line; malformed lines raise or are counted."""
    import json

    with open(path, encoding="utf-8") as f:
        head = f.read(1 << 16).lstrip()
    if head.startswith("["):
        from reward.files import iter_records
        for i, rec in iter_records(path, "annotation file"):
            yield f"item {i}", rec
        return
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                checker.bad("malformed_json", f"malformed JSON ({e.msg}, column {e.colno})", file=path,
                            record=f"line {lineno}", fix="write one JSON object a line")
                continue
            yield f"line {lineno}", rec


def load_jsonl(path: Path, checker: _Checker, mapper: NameMapper, files: _FileIndex | None,
                size_root: Path | None) -> LoadedAnnotations:
    from tqdm import tqdm

    out: list[GroundedImage] = []
    seen: dict[Any, str] = {}
    names: dict[str, str] = {}
    fix = 'one image a line: {"image_id", "image", "objects": [{"name", "bbox"}], "captions"}'
    for label, rec in tqdm(iter_jsonl(path, checker), desc="annotations", unit=" img", mininterval=1.0,
                           leave=False):
        if not isinstance(rec, dict):
            checker.bad("malformed_record", f"record is {type(rec).__name__}, expected an object",
                        file=path, record=label, fix=fix)
            continue
        image_id = rec.get("image_id")
        file_name = rec.get("image", rec.get("file_name"))
        if isinstance(image_id, (int, str)) and not isinstance(image_id, bool):
            label = f"{label} (image_id {image_id!r})"
        else:
            checker.bad("malformed_record", "missing or invalid 'image_id'", file=path, record=label, fix=fix)
            continue
        if not isinstance(file_name, str) or not file_name:
            checker.bad("malformed_record", "missing or invalid 'image' (a path relative to --images)",
                        file=path, record=label, fix=fix)
            continue
        if image_id in seen:
            checker.bad("duplicate_image_id", f"image_id {image_id!r} already appeared at {seen[image_id]}",
                        file=path, record=label, fix="write each image once")
            continue
        seen[image_id] = label
        if _escapes(file_name):
            checker.bad("path_escapes_images", f"image path {file_name!r} points outside the image folder",
                        file=path, record=label, fix="use a path relative to --images, without '..'")
            continue
        if files is not None and not files.exists(file_name):
            checker.bad("missing_image_file", f"image file {file_name!r} not found under {files.root}",
                        file=path, record=label, fix="check --images or remove the record")
            continue
        width, height = rec.get("width", 0), rec.get("height", 0)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in (width, height)):
            checker.bad("malformed_record", f"'width'/'height' must be numbers, got {width!r}/{height!r}",
                        file=path, record=label, fix="give sizes in pixels or leave them out")
            continue
        if not (width and height) and size_root is not None:
            width, height = _image_size(size_root / file_name)
        image = _jsonl_image(rec, label, path, checker, mapper, image_id, file_name, int(width), int(height))
        if image is None:
            continue
        for name in image.object_names:
            names.setdefault(name, name)
        out.append(image)
    if not out and not checker.skipped:
        raise InputError("the annotation file has no records", file=path, fix="pass a file with one image a line")
    return LoadedAnnotations(out, dict(sorted(names.items())), format="jsonl"), set(seen)


def _jsonl_image(rec, label, path, checker, mapper, image_id, file_name, width, height) -> GroundedImage | None:
    raw_objects = rec.get("objects", [])
    raw_captions = rec.get("captions", [])
    if isinstance(raw_captions, str):
        raw_captions = [raw_captions]
    if not isinstance(raw_objects, list):
        checker.bad("malformed_record", "'objects' must be a list", file=path, record=label,
                    fix='write "objects": [{"name": ..., "bbox": [x, y, w, h]}, ...]')
        return None
    if not isinstance(raw_captions, list) or not all(isinstance(c, str) for c in raw_captions):
        checker.bad("malformed_record", "'captions' must be a list of strings", file=path, record=label,
                    fix='write "captions": ["...", ...]')
        return None
    objects = []
    for j, obj in enumerate(raw_objects):
        where = f"{label}, objects[{j}]"
        raw_name, raw_bbox = (obj, None) if isinstance(obj, str) else (
            (obj.get("name"), obj.get("bbox")) if isinstance(obj, dict) else (None, None))
        if not isinstance(raw_name, str):
            checker.bad("malformed_record", "object needs a 'name'", file=path, record=where,
                        fix='write {"name": ..., "bbox": [x, y, w, h]}')
            return None
        name = mapper(raw_name)
        if name is None:
            checker.bad("unknown_category", f"object name {raw_name!r} is not in {mapper.label}", file=path,
                        record=where, fix="use the vocabulary's names (--vocab) or add the name to it")
            return None
        box = None
        if raw_bbox is not None:
            problem, box = _bbox(raw_bbox, width, height)
            if problem:
                checker.bad("bbox_out_of_bounds", problem, file=path, record=where,
                            fix="fix the box ([x, y, width, height] in pixels)")
                return None
        objects.append(GroundedObject(name, box))
    return GroundedImage(image_id, file_name, width, height, objects, list(raw_captions))


def _image_size(path: Path) -> tuple[int, int]:
    try:
        from PIL import Image
        with Image.open(path) as im:  # reads the header only
            return im.size
    except Exception:  # noqa: BLE001 - an unreadable image only means "size unknown" here
        return 0, 0
