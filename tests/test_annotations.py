"""Loader validation: every bad input gives an InputError naming the file and the record."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from data_prep.annotations import GroundedImage, GroundedObject, load_annotations
from reward.files import InputError

pytestmark = pytest.mark.unit

# A stand-in vocabulary with the attributes the loader reads (reward.vocab.Vocabulary has the same).
SHAPES = SimpleNamespace(name="shapes", objects=("star", "moon", "square"),
                         synonyms={"star": ("star",), "moon": ("moon", "crescent moon"), "square": ("square", "box")})


def coco(**over):
    data = {
        "info": {"description": "test"},
        "images": [
            {"id": 1, "file_name": "a.png", "width": 100, "height": 80},
            {"id": 2, "file_name": "sub/b.png", "width": 50, "height": 50},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 8, "bbox": [90, 70, 10, 10], "iscrowd": 0},
            {"id": 12, "image_id": 2, "category_id": 7, "bbox": [5.5, 5, 20.25, 30], "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "star"}, {"id": 8, "name": "crescent moon"}],
    }
    data.update(over)
    return data


@pytest.fixture
def world(tmp_path):
    (tmp_path / "img" / "sub").mkdir(parents=True)
    (tmp_path / "img" / "a.png").write_bytes(b"x")
    (tmp_path / "img" / "sub" / "b.png").write_bytes(b"x")
    return tmp_path


def write(path: Path, data) -> Path:
    path.write_text(json.dumps(data, indent=1) if not isinstance(data, str) else data)
    return path


def test_coco_loads_with_captions_and_maps_names(world):
    ann = write(world / "instances.json", coco())
    caps = write(world / "captions.json", {"images": [], "annotations": [
        {"image_id": 2, "id": 1, "caption": "A star."},
        {"image_id": 1, "id": 2, "caption": " A star and a moon. "},
        {"image_id": 1, "id": 3, "caption": "Two shapes."}]})
    loaded = load_annotations(ann, world / "img", caps, vocab=SHAPES)
    assert loaded.format == "coco"
    assert [im.image_id for im in loaded.images] == [1, 2]
    first = loaded.images[0]
    assert first == GroundedImage(1, "a.png", 100, 80, [GroundedObject("star", (0.0, 0.0, 10.0, 10.0)),
                                                        GroundedObject("moon", (90.0, 70.0, 10.0, 10.0))],
                                  ["A star and a moon.", "Two shapes."])
    assert first.object_names == {"star", "moon"}
    assert loaded.images[1].captions == ["A star."]
    assert loaded.categories == {7: "star", 8: "moon"}
    assert not loaded.skipped


def test_coco_without_vocab_keeps_names(world):
    loaded = load_annotations(write(world / "i.json", coco()), world / "img")
    assert loaded.images[0].object_names == {"star", "crescent moon"}


def test_jsonl_loads(world):
    lines = [
        {"image_id": "x1", "image": "a.png", "width": 100, "height": 80,
         "objects": [{"name": "box", "bbox": [1, 2, 3, 4]}, "star"], "captions": ["A box."]},
        {"image_id": "x2", "image": "sub/b.png", "objects": []},
    ]
    path = write(world / "ann.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    loaded = load_annotations(path, world / "img", vocab=SHAPES)
    assert loaded.format == "jsonl"
    assert loaded.images[0] == GroundedImage("x1", "a.png", 100, 80, [GroundedObject("square", (1.0, 2.0, 3.0, 4.0)),
                                                                       GroundedObject("star", None)], ["A box."])
    assert loaded.images[1].objects == [] and loaded.images[1].width == 0  # b.png is no real image


def error_of(*args, **kw) -> str:
    with pytest.raises(InputError) as e:
        load_annotations(*args, **kw)
    return e.value.message()


@pytest.mark.parametrize("mutate, reason, words", [
    (lambda d: d["images"][1].update(file_name="missing.png"), "missing_image_file", ["images[1]", "missing.png"]),
    (lambda d: d["images"][1].update(file_name="../secret.png"), "path_escapes_images", ["images[1]", "outside"]),
    (lambda d: d["images"][1].update(file_name="/etc/passwd"), "path_escapes_images", ["images[1]", "outside"]),
    (lambda d: d["annotations"][2].update(image_id=99), "unknown_image", ["annotations[2] (id 12)", "99"]),
    (lambda d: d["annotations"][2].update(category_id=5), "unknown_category", ["annotations[2] (id 12)", "5"]),
    (lambda d: d["annotations"][2].update(bbox=[40, 40, 20, 20]), "bbox_out_of_bounds",
     ["annotations[2] (id 12)", "outside the 50x50 image"]),
    (lambda d: d["annotations"][2].update(bbox=[1, 1, -3, 2]), "bbox_out_of_bounds", ["annotations[2]", "negative"]),
    (lambda d: d["annotations"][2].update(bbox="oops"), "bbox_out_of_bounds", ["annotations[2]", "4 numbers"]),
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate_image_id", ["images[2]", "twice"]),
    (lambda d: d["images"][1].pop("width"), "malformed_record", ["images[1]", "width"]),
])
def test_coco_errors_name_file_and_record(world, mutate, reason, words):
    data = coco()
    mutate(data)
    path = write(world / "instances.json", data)
    msg = error_of(path, world / "img", vocab=SHAPES)
    assert str(path) in msg
    for w in words:
        assert w in msg
    assert "--skip-bad" in msg
    loaded = load_annotations(path, world / "img", vocab=SHAPES, skip_bad=True)
    assert loaded.skipped[reason] == 1
    if reason == "duplicate_image_id":  # which of the two records is right is unknowable: both go
        assert [im.image_id for im in loaded.images] == [2]
    else:  # the defect is on image 2 or on nothing loaded: image 1 stays intact
        assert loaded.images[0].image_id == 1 and loaded.images[0].object_names == {"star", "moon"}
        assert len(loaded.images) == 1 + (reason == "unknown_image")


def test_bad_annotation_drops_its_image_when_skipping(world):
    data = coco()
    data["annotations"][1]["bbox"] = [95, 0, 10, 10]  # image 1 is 100 wide: x+w = 105
    loaded = load_annotations(write(world / "i.json", data), world / "img", vocab=SHAPES, skip_bad=True)
    assert [im.image_id for im in loaded.images] == [2]
    assert loaded.skipped == {"bbox_out_of_bounds": 1, "image_dropped_bad_annotation": 1}


def test_box_within_tolerance_is_accepted(world):
    data = coco()
    data["annotations"][1]["bbox"] = [90.5, 70, 10.4, 10.9]  # rounding: 100.9 and 80.9 on 100x80
    loaded = load_annotations(write(world / "i.json", data), world / "img", vocab=SHAPES)
    assert len(loaded.images[0].objects) == 2


def test_category_outside_vocabulary(world):
    data = coco()
    data["categories"].append({"id": 9, "name": "giraffe"})
    data["annotations"].append({"id": 13, "image_id": 2, "category_id": 9, "bbox": [0, 0, 1, 1]})
    path = write(world / "i.json", data)
    msg = error_of(path, world / "img", vocab=SHAPES)
    assert "categories[2] (id 9)" in msg and "'giraffe' is not in the 'shapes' vocabulary" in msg
    loaded = load_annotations(path, world / "img", vocab=SHAPES, skip_bad=True)
    assert loaded.skipped == {"category_not_in_vocabulary": 1}
    assert loaded.images[1].object_names == {"star"}  # the giraffe is left out, the image kept


def test_missing_files_not_checked_when_disabled(world):
    data = coco()
    data["images"][1]["file_name"] = "nowhere.png"
    loaded = load_annotations(write(world / "i.json", data), world / "img", check_images=False)
    assert len(loaded.images) == 2


def test_malformed_json_names_line(world):
    text = json.dumps(coco(), indent=1)
    path = write(world / "i.json", text[: len(text) // 2])
    msg = error_of(path, world / "img")
    assert str(path) in msg and "malformed JSON at line" in msg


def test_empty_file(world):
    path = write(world / "i.json", "  \n")
    assert "empty" in error_of(path, world / "img")


def test_not_coco(world):
    path = write(world / "i.json", {"images": [], "annotations": []})
    assert "'categories'" in error_of(path, world / "img")


@pytest.mark.parametrize("line, reason, words", [
    ('{"image_id": 3, "image": "a.png", "objects": [{"name": "star", "bbox": [0, 0, 1, 1]}]', "malformed_json",
     ["line 2", "malformed JSON"]),
    ('{"image_id": 3, "image": "gone.png"}', "missing_image_file", ["line 2 (image_id 3)", "gone.png"]),
    ('{"image_id": 3, "image": "../a.png"}', "path_escapes_images", ["line 2 (image_id 3)", "outside"]),
    ('{"image_id": 3, "image": "a.png", "objects": [{"name": "dragon"}]}', "unknown_category",
     ["line 2 (image_id 3), objects[0]", "'dragon'"]),
    ('{"image_id": 3, "image": "a.png", "width": 10, "height": 10, "objects": [{"name": "star", "bbox": [5, 5, 9, 1]}]}',
     "bbox_out_of_bounds", ["line 2 (image_id 3), objects[0]", "outside the 10x10 image"]),
    ('{"image_id": 1, "image": "a.png"}', "duplicate_image_id", ["line 2 (image_id 1)", "line 1"]),
    ('{"image": "a.png"}', "malformed_record", ["line 2", "image_id"]),
])
def test_jsonl_errors_name_file_and_record(world, line, reason, words):
    path = write(world / "a.jsonl", json.dumps({"image_id": 1, "image": "a.png"}) + "\n" + line + "\n")
    msg = error_of(path, world / "img", vocab=SHAPES)
    assert str(path) in msg
    for w in words:
        assert w in msg
    loaded = load_annotations(path, world / "img", vocab=SHAPES, skip_bad=True)
    assert loaded.skipped == {reason: 1}
    assert [im.image_id for im in loaded.images] == [1]


def test_caption_for_unknown_image(world):
    ann = write(world / "i.json", coco())
    caps = write(world / "c.jsonl", '{"image_id": 1, "caption": "A star."}\n{"image_id": 42, "caption": "x"}\n')
    msg = error_of(ann, world / "img", caps)
    assert str(caps) in msg and "line 2" in msg and "42" in msg
    loaded = load_annotations(ann, world / "img", caps, skip_bad=True)
    assert loaded.images[0].captions == ["A star."] and loaded.skipped == {"caption_unknown_image": 1}


def test_missing_paths(world):
    assert "annotation file not found" in error_of(world / "nope.json", world / "img")
    ann = write(world / "i.json", coco())
    assert "image folder not found" in error_of(ann, world / "nofolder")
