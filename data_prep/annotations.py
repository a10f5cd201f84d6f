"""Grounded annotations: which objects each image holds, where, and its ground-truth captions.

Two input formats (DESIGN.md), picked by content:
- COCO `instances_*.json` (+ optional `captions_*.json`), streamed item by item (data_prep/jsonstream.py)
  so that a train2017-sized file never sits in memory as dicts;
- the generic JSONL, one image a line:
  `{"image_id", "image", "objects": [{"name", "bbox": [x, y, w, h]}], "captions": [str]}`
  (optional `"width"`, `"height"`; an object may also be a bare name when no box is known).

Every record is validated on load. A bad record raises an `InputError` naming the file, the record and
the fix; with `skip_bad=True` it is counted under a reason in `LoadedAnnotations.skipped` instead.
An image with an annotation that cannot be trusted (unknown category, box out of bounds, malformed) is
dropped whole when skipping: keeping it would hand the pair miner a wrong list of absent objects.
"""
from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from reward.files import InputError

from data_prep.jsonstream import JSONStreamError, iter_top_level, stream_error

# COCO boxes are float pixel coordinates; annotation tools round, so allow a box to poke out this far.
BBOX_TOLERANCE = 1.0
_COCO_KEYS = {"info", "licenses", "images", "annotations", "categories", "type"}
_JSONL_KEYS = {"image_id", "image", "objects", "captions", "width", "height", "file_name"}


@dataclass(slots=True)
class GroundedObject:
    name: str  # canonical vocabulary name
    bbox: tuple[float, float, float, float] | None  # COCO xywh in pixels; None when only the name is known


@dataclass(slots=True)
class GroundedImage:
    image_id: int | str
    file_name: str  # relative to the images folder
    width: int  # 0 when unknown (generic JSONL without sizes and without the image file)
    height: int
    objects: list[GroundedObject] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)

    @property
    def object_names(self) -> set[str]:
        return {o.name for o in self.objects}


@dataclass
class LoadedAnnotations:
    images: list[GroundedImage]  # in file order
    categories: dict[Any, str]  # COCO category id -> canonical name (generic JSONL: name -> name)
    skipped: Counter = field(default_factory=Counter)  # reason -> number of records skipped
    source: dict[str, Path | None] = field(default_factory=dict)  # annotations, captions, images
    format: str = "coco"

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[GroundedImage]:
        return iter(self.images)


# ------------------------------------------------------------------------------------------ names
class NameMapper:
    """Map an annotation's category name to the vocabulary's canonical name (None: not in it)."""

    def __init__(self, vocab):
        self.vocab = resolve_vocab(vocab) if vocab is not None else None
        self.table: dict[str, str] = {}
        if self.vocab is not None:
            for canonical, forms in self.vocab.synonyms.items():
                for form in forms:
                    self.table.setdefault(form.strip().lower(), canonical)
            for canonical in self.vocab.objects:  # canonical names win over a clashing surface form
                self.table[canonical.lower()] = canonical

    def __call__(self, name: str) -> str | None:
        if self.vocab is None:
            return name.strip()
        return self.table.get(name.strip().lower())

    @property
    def label(self) -> str:
        return f"the {self.vocab.name!r} vocabulary" if self.vocab is not None else "the vocabulary"


def resolve_vocab(vocab):
    """A Vocabulary, or a name/path for reward.vocab.load_vocabulary."""
    if isinstance(vocab, (str, os.PathLike)):
        from reward.vocab import load_vocabulary
        return load_vocabulary(str(vocab))
    return vocab


# ------------------------------------------------------------------------------------------ checks
class _Checker:
    """Raise or count: the one place that decides what a bad record does."""

    def __init__(self, skip_bad: bool):
        self.skip_bad = skip_bad
        self.skipped: Counter = Counter()

    def bad(self, reason: str, problem: str, *, file, record, fix: str) -> None:
        if not self.skip_bad:
            raise InputError(problem, file=file, record=record, fix=fix + " (or pass --skip-bad to skip "
                                                                      "such records and count them)")
        self.skipped[reason] += 1


_NUMBER_TYPES = frozenset((int, float))  # exact types: a bool is no coordinate
_INF = float("inf")


def _bbox(value, width: float, height: float) -> tuple[str, tuple | None]:
    """('', box) if the box is well-formed and inside the image, else (problem, None)."""
    # fast path for the 860k good boxes of a COCO train set (NaN fails every comparison below)
    if value.__class__ is list and len(value) == 4:
        x, y, w, h = value
        t = BBOX_TOLERANCE
        if (x.__class__ in _NUMBER_TYPES and y.__class__ in _NUMBER_TYPES and w.__class__ in _NUMBER_TYPES
                and h.__class__ in _NUMBER_TYPES and -t <= x < _INF and -t <= y < _INF and 0 <= w < _INF
                and 0 <= h < _INF and (not width or x + w <= width + t) and (not height or y + h <= height + t)):
            return "", (float(x), float(y), float(w), float(h))
    return _bbox_checked(value, width, height)


def _bbox_checked(value, width: float, height: float) -> tuple[str, tuple | None]:
    if (not isinstance(value, (list, tuple)) or len(value) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        return f"bbox {value!r} is not [x, y, width, height] with 4 numbers", None
    x, y, w, h = (float(v) for v in value)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        return f"bbox {list(value)!r} has a negative or non-finite size", None
    t = BBOX_TOLERANCE
    if x < -t or y < -t or (width and x + w > width + t) or (height and y + h > height + t):
        return (f"bbox {list(value)!r} lies outside the {width:g}x{height:g} image "
                f"(x+w={x + w:g}, y+h={y + h:g})"), None
    return "", (x, y, w, h)


def _escapes(file_name: str) -> bool:
    p = file_name.replace("\\", "/")
    if p.startswith("/") or (len(p) > 1 and p[1] == ":"):
        return True
    norm = os.path.normpath(p)
    return norm == ".." or norm.startswith("../")


class _FileIndex:
    """Existence checks through one directory listing per folder (118k stat calls are slow)."""

    def __init__(self, root: Path):
        self.root = root
        self.listings: dict[str, set[str] | None] = {}

    def exists(self, rel: str) -> bool:
        parent, _, name = os.path.normpath(rel).replace("\\", "/").rpartition("/")
        if parent not in self.listings:
            try:
                self.listings[parent] = set(os.listdir(self.root / parent))
            except OSError:
                self.listings[parent] = None
        names = self.listings[parent]
        return names is not None and name in names


# ------------------------------------------------------------------------------------------ entry
def load_annotations(annotations, images=None, captions=None, *, vocab=None, skip_bad: bool = False,
                     check_images: bool = True) -> LoadedAnnotations:
    """Load and validate grounded annotations (COCO instances JSON or generic JSONL).

    annotations: path of the instances JSON or the generic JSONL.
    images: the image folder that `file_name`/`image` paths are relative to (None: no file checks).
    captions: optional COCO captions JSON (or JSONL of {"image_id", "caption"}) merged into `captions`.
    vocab: a Vocabulary or a name/path for reward.vocab.load_vocabulary; category names are mapped to its
        canonical names (None: names kept as written).
    skip_bad: count and skip bad records instead of raising InputError.
    check_images: check that every image file exists under `images`.
    """
    path = Path(annotations)
    root = Path(images) if images is not None else None
    if not path.is_file():
        raise InputError("annotation file not found", file=path, fix="check the --annotations path")
    if root is not None and check_images and not root.is_dir():
        raise InputError("image folder not found", file=root, fix="check the --images path")
    checker = _Checker(skip_bad)
    mapper = NameMapper(vocab)
    files = _FileIndex(root) if (root is not None and check_images) else None
    kind = _detect_format(path)
    if kind == "coco":
        loaded, listed_ids = _load_coco(path, checker, mapper, files)
    else:
        from data_prep.annotations_jsonl import load_jsonl
        loaded, listed_ids = load_jsonl(path, checker, mapper, files, root if check_images else None)
    if captions is not None:
        _merge_captions(Path(captions), loaded.images, listed_ids, checker)
    loaded.skipped = checker.skipped
    loaded.source = {"annotations": path, "captions": Path(captions) if captions else None, "images": root}
    return loaded


def _detect_format(path: Path) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(1 << 16)
    stripped = head.lstrip()
    if not stripped:
        raise InputError("the annotation file is empty", file=path,
                         fix="pass a COCO instances JSON or a JSONL with one image a line")
    if stripped[0] == "[":
        return "jsonl"  # a JSON list of generic records
    if stripped[0] != "{":
        raise InputError("not JSON: the file must start with '{' or '['", file=path, record="line 1",
                         fix="pass a COCO instances JSON or a JSONL with one image a line")
    import re
    m = re.match(r'\{\s*"((?:[^"\\]|\\.)*)"', stripped)
    first_key = m.group(1) if m else None
    if first_key in _COCO_KEYS:
        return "coco"
    if first_key in _JSONL_KEYS:
        return "jsonl"
    return "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "coco"


# ------------------------------------------------------------------------------------------ COCO
def _load_coco(path: Path, checker: _Checker, mapper: NameMapper, files: _FileIndex | None
               ) -> LoadedAnnotations:
    from tqdm import tqdm

    image_rows: list[tuple] = []  # (id, file_name, width, height, record) in file order
    seen_ids: dict[Any, int] = {}
    dropped: set = set()  # image ids dropped whole (skip_bad)
    by_image: dict[Any, list] = {}  # image id -> [(category id, raw bbox, record label)]
    raw_categories: list[tuple[int, dict]] = []
    have = set()
    try:
        for key, value in iter_top_level(path):
            have.add(key)
            if key == "images":
                for rec in tqdm(value, desc="images", unit=" img", mininterval=1.0, leave=False):
                    _coco_image(rec, value.index, path, checker, image_rows, seen_ids, dropped)
            elif key == "annotations":
                get = by_image.get
                for index, rec in enumerate(tqdm(value, desc="annotations", unit=" ann", mininterval=1.0,
                                                 leave=False)):
                    try:  # hot loop (860k records): keep only what is needed, label built on error only
                        image_id, entry = rec["image_id"], (rec["category_id"], rec.get("bbox"), index)
                    except (KeyError, TypeError):
                        _malformed_annotation(rec, index, path, checker, by_image)
                        continue
                    anns = get(image_id)
                    if anns is None:
                        by_image[image_id] = [entry]
                    else:
                        anns.append(entry)
            elif key == "categories":
                raw_categories = list(enumerate(value))
    except JSONStreamError as e:
        raise stream_error(path, e, "COCO annotation file") from None
    for needed in ("images", "annotations", "categories"):
        if needed not in have:
            raise InputError(f"no {needed!r} list: this is not a COCO instances file", file=path,
                             fix="pass instances_*.json (captions go to --captions)")
    categories, out_of_vocab = _coco_categories(path, raw_categories, checker, mapper)

    # annotations pointing at images that the file does not list
    for image_id, anns in by_image.items():
        if image_id not in seen_ids:
            for _, _, index in anns:
                if index != _MALFORMED:
                    label = _AnnLabel(path, index)
                    checker.bad("unknown_image", f"annotation points at image id {image_id!r}, which is "
                                "not in the 'images' list", file=path, record=label,
                                fix="remove the annotation or add the image")

    out: list[GroundedImage] = []
    for image_id, file_name, width, height, label in image_rows:
        anns = by_image.pop(image_id, ())
        if image_id in dropped:
            continue
        if files is not None and not files.exists(file_name):
            checker.bad("missing_image_file", f"image file {file_name!r} not found under {files.root}",
                        file=path, record=label, fix="check --images or remove the image record")
            continue
        objects, ok = [], True
        for cat_id, raw_bbox, ann_index in anns:
            if ann_index == _MALFORMED:
                ok = False  # already counted as malformed_record
                continue
            name = categories.get(cat_id)
            if name is None:
                if cat_id in out_of_vocab:
                    continue  # an object the vocabulary cannot name: harmless to leave out
                checker.bad("unknown_category", f"annotation has category_id {cat_id!r}, which is not in "
                            "the 'categories' list", file=path, record=_AnnLabel(path, ann_index),
                            fix="fix the category_id or add the category")
                ok = False
                continue
            problem, box = _bbox(raw_bbox, width, height)
            if problem:
                checker.bad("bbox_out_of_bounds", problem, file=path, record=_AnnLabel(path, ann_index),
                            fix="fix the box (COCO boxes are [x, y, width, height] in pixels)")
                ok = False
                continue
            objects.append(GroundedObject(name, box))
        if not ok:
            checker.skipped["image_dropped_bad_annotation"] += 1
            continue
        out.append(GroundedImage(image_id, file_name, width, height, objects, []))
    return LoadedAnnotations(out, categories, format="coco"), set(seen_ids)


def _coco_image(rec, index, path, checker, rows, seen_ids, dropped) -> None:
    label = f"images[{index}]" + (f" (id {rec.get('id')!r})" if isinstance(rec, dict) and "id" in rec else "")
    if not isinstance(rec, dict):
        checker.bad("malformed_record", f"image record is {type(rec).__name__}, expected an object",
                    file=path, record=label, fix="every item of 'images' must be an object")
        return
    image_id, file_name = rec.get("id"), rec.get("file_name")
    width, height = rec.get("width"), rec.get("height")
    problem = None
    if not isinstance(image_id, (int, str)) or isinstance(image_id, bool):
        problem = "missing or invalid 'id'"
    elif not isinstance(file_name, str) or not file_name:
        problem = "missing or invalid 'file_name'"
    elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        problem = f"'width'/'height' must be positive numbers, got {width!r}/{height!r}"
    if problem:
        checker.bad("malformed_record", problem, file=path, record=label,
                    fix="every image needs id, file_name, width and height")
        if isinstance(image_id, (int, str)):
            dropped.add(image_id)
            seen_ids.setdefault(image_id, index)
        return
    if image_id in seen_ids:
        checker.bad("duplicate_image_id", f"image id {image_id!r} is listed twice (first at images"
                    f"[{seen_ids[image_id]}])", file=path, record=label, fix="give every image its own id")
        dropped.add(image_id)
        return
    seen_ids[image_id] = index
    if _escapes(file_name):
        checker.bad("path_escapes_images", f"file_name {file_name!r} points outside the image folder",
                    file=path, record=label, fix="use a path relative to --images, without '..'")
        dropped.add(image_id)
        return
    rows.append((image_id, file_name, int(width), int(height), label))


def _malformed_annotation(rec, index, path, checker, by_image) -> None:
    label = f"annotations[{index}]"
    if isinstance(rec, dict) and "id" in rec:
        label += f" (id {rec['id']!r})"
    checker.bad("malformed_record", "annotation needs 'image_id', 'category_id' and 'bbox'", file=path,
                record=label, fix="repair the annotation")
    if isinstance(rec, dict) and "image_id" in rec:
        by_image.setdefault(rec["image_id"], []).append((None, None, _MALFORMED))


_MALFORMED = -1  # index placeholder: the annotation was malformed and already counted


class _AnnLabel:
    """"annotations[i] (id N)", the id read back from the file when the label is shown (an error that
    stops the run); with --skip-bad it is never shown, so thousands of bad records cost nothing."""

    def __init__(self, path: Path, index: int):
        self.path, self.index = path, index

    def __str__(self) -> str:
        return _ann_label(self.path, self.index)


def _ann_label(path: Path, index: int) -> str:
    try:
        for key, value in iter_top_level(path):
            if key == "annotations":
                for i, rec in enumerate(value):
                    if i == index:
                        if isinstance(rec, dict) and "id" in rec:
                            return f"annotations[{index}] (id {rec['id']!r})"
                        break
                break
    except JSONStreamError:
        pass
    return f"annotations[{index}]"


def _coco_categories(path, raw, checker, mapper) -> dict:
    categories: dict = {}
    out_of_vocab: set = set()
    for index, rec in raw:
        label = f"categories[{index}]"
        if not isinstance(rec, dict) or not isinstance(rec.get("name"), str) or "id" not in rec:
            raise InputError("category needs 'id' and 'name'", file=path, record=label,
                             fix="repair the categories list")
        canonical = mapper(rec["name"])
        if canonical is None:
            checker.bad("category_not_in_vocabulary", f"category {rec['name']!r} is not in {mapper.label}",
                        file=path, record=f"{label} (id {rec['id']!r})",
                        fix="pick the vocabulary that matches the data (--vocab) or add the name to it")
            out_of_vocab.add(rec["id"])
            continue
        categories[rec["id"]] = canonical
    return categories, out_of_vocab


# ------------------------------------------------------------------------------------------ captions
def _merge_captions(path: Path, images: list[GroundedImage], listed_ids: set, checker: _Checker) -> None:
    """Append the captions of a COCO captions JSON (or a JSONL of {"image_id", "caption"}) in file order."""
    if not path.is_file():
        raise InputError("captions file not found", file=path, fix="check the --captions path")
    by_id = {im.image_id: im for im in images}
    kind = _detect_format(path)

    def add(rec, label):
        if not isinstance(rec, dict) or not isinstance(rec.get("caption"), str) or "image_id" not in rec:
            checker.bad("malformed_caption", "caption record needs 'image_id' and a string 'caption'",
                        file=path, record=label, fix="repair the record")
            return
        image = by_id.get(rec["image_id"])
        if image is None:
            if rec["image_id"] in listed_ids:
                return  # the image itself was skipped (--skip-bad): its captions go with it
            checker.bad("caption_unknown_image", f"caption points at image id {rec['image_id']!r}, which is "
                        "not in the annotations", file=path, record=label,
                        fix="pass the captions file of the same split")
            return
        image.captions.append(rec["caption"].strip())

    if kind == "coco":
        try:
            for key, value in iter_top_level(path):
                if key == "annotations":
                    for rec in value:
                        add(rec, f"annotations[{value.index}]")
        except JSONStreamError as e:
            raise stream_error(path, e, "COCO captions file") from None
        return
    from data_prep.annotations_jsonl import iter_jsonl
    for label, rec in iter_jsonl(path, checker):
        add(rec, label)
