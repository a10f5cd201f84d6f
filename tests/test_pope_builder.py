"""POPE builder: 3 yes + 3 no per image, negatives per setting, images with >= 3 objects, seeded."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from data_prep.annotations import GroundedImage, GroundedObject
from data_prep.pope import build_pope_questions, pope_command, select_pope_images
from reward.files import InputError

pytestmark = pytest.mark.unit

VOCAB = SimpleNamespace(name="toy", objects=("apple", "bus", "car", "cat", "cup", "dog", "tv", "zebra"),
                        synonyms={})


def img(i, *names):
    return GroundedImage(i, f"{i}.jpg", 100, 100, [GroundedObject(n, (0, 0, 1, 1)) for n in names], [])


IMAGES = [img(1, "cat", "dog", "car", "dog"), img(2, "cat", "dog", "cup"), img(3, "cat", "car", "bus", "tv"),
          img(4, "dog", "cup", "apple"), img(5, "cat", "dog")]


def by_image(questions):
    out = {}
    for q in questions:
        out.setdefault(q["image_id"], []).append(q)
    return out


def test_selection_needs_three_distinct_objects():
    chosen = select_pope_images(IMAGES, 4, seed=0)
    assert sorted(im.image_id for im in chosen) == [1, 2, 3, 4]  # image 5 has two objects
    with pytest.raises(InputError, match="only 4 images hold at least 3"):
        select_pope_images(IMAGES, 5, seed=0)


def test_layout_yes_no_alternate_and_ids_count_from_one():
    qs = build_pope_questions(IMAGES, VOCAB, setting="random", n_images=4, seed=1)
    assert [q["question_id"] for q in qs] == list(range(1, 25))
    assert [q["label"] for q in qs] == ["yes", "no"] * 12
    for image_id, group in by_image(qs).items():
        present = next(im for im in IMAGES if im.image_id == image_id).object_names
        yes = [q["object"] for q in group if q["label"] == "yes"]
        no = [q["object"] for q in group if q["label"] == "no"]
        assert len(set(yes)) == 3 and set(yes) <= present
        assert len(set(no)) == 3 and not set(no) & present and set(no) <= set(VOCAB.objects)
        assert all(q["image"] == f"{image_id}.jpg" and q["setting"] == "random" for q in group)
    apple = [q for q in qs if q["object"] == "apple"]
    assert apple and all(q["text"] == "Is there an apple in the image?" for q in apple)
    cup = [q for q in qs if q["object"] == "cup"]
    assert cup and all(q["text"] == "Is there a cup in the image?" for q in cup)


def test_popular_negatives_are_the_most_frequent_absent_objects():
    # frequency over the 4 sampled images: cat 3, dog 3, car 2, cup 2, then apple, bus, tv 1
    qs = by_image(build_pope_questions(IMAGES, VOCAB, setting="popular", n_images=4, seed=0))
    assert [q["object"] for q in qs[1] if q["label"] == "no"] == ["cup", "apple", "bus"]
    assert [q["object"] for q in qs[4] if q["label"] == "no"] == ["cat", "car", "bus"]
    assert [q["object"] for q in qs[3] if q["label"] == "no"] == ["dog", "cup", "apple"]


# image 1 = {cat, dog, car}; co-occurrence rows over the 4 images (count, then popularity, then name):
# cat: dog, car, cup, bus, tv   dog: cat, cup, car, apple   car: cat, dog, bus, tv
ADVERSARIAL_IMAGE_1 = {
    ("cat", "dog", "car"): ["cup", "apple", "bus"], ("cat", "car", "dog"): ["cup", "bus", "apple"],
    ("dog", "cat", "car"): ["cup", "bus", "tv"], ("dog", "car", "cat"): ["cup", "bus", "tv"],
    ("car", "cat", "dog"): ["bus", "cup", "apple"], ("car", "dog", "cat"): ["bus", "cup", "tv"],
}


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_adversarial_negatives_follow_each_present_object(seed):
    group = by_image(build_pope_questions(IMAGES, VOCAB, setting="adversarial", n_images=4, seed=seed))[1]
    yes = tuple(q["object"] for q in group if q["label"] == "yes")
    assert [q["object"] for q in group if q["label"] == "no"] == ADVERSARIAL_IMAGE_1[yes]


def test_settings_share_images_and_positives_and_seed_is_deterministic():
    runs = {s: build_pope_questions(IMAGES, VOCAB, setting=s, n_images=3, seed=7)
            for s in ("random", "popular", "adversarial")}
    yes = {s: [(q["image_id"], q["object"]) for q in qs if q["label"] == "yes"] for s, qs in runs.items()}
    assert yes["random"] == yes["popular"] == yes["adversarial"]
    assert build_pope_questions(IMAGES, VOCAB, setting="random", n_images=3, seed=7) == runs["random"]
    others = [build_pope_questions(IMAGES, VOCAB, setting="random", n_images=3, seed=s) for s in range(8, 14)]
    assert any(o != runs["random"] for o in others)


def test_avoid_keeps_caption_objects_out_of_negatives():
    qs = build_pope_questions(IMAGES, VOCAB, setting="popular", n_images=4, seed=0, avoid={1: {"cup"}})
    assert [q["object"] for q in by_image(qs)[1] if q["label"] == "no"] == ["apple", "bus", "tv"]


def test_pope_command_writes_sets_and_image_list(tmp_path):
    vocab_file = tmp_path / "toy.yaml"
    vocab_file.write_text("name: toy\nobjects:\n" + "".join(f"  {o}: [{o}]\n" for o in VOCAB.objects))
    lines = [json.dumps({"image_id": im.image_id, "image": im.file_name,
                         "objects": [{"name": o.name, "bbox": list(o.bbox)} for o in im.objects]}) for im in IMAGES]
    ann = tmp_path / "ann.jsonl"
    ann.write_text("\n".join(lines) + "\n")
    out = tmp_path / "pope"
    pytest.importorskip("reward.vocab")
    assert pope_command(ann, tmp_path, out, n_images=4, seed=3, vocab=str(vocab_file), check_images=False) == 0
    for s in ("random", "popular", "adversarial"):
        rows = [json.loads(x) for x in (out / f"pope_{s}.jsonl").read_text().splitlines()]
        assert len(rows) == 24 and {r["setting"] for r in rows} == {s}
    listing = json.loads((out / "pope_images.json").read_text())
    assert sorted(x["image_id"] for x in listing["images"]) == [1, 2, 3, 4]
    first = (out / "pope_adversarial.jsonl").read_bytes()
    # the written image list rebuilds the same set; a second run with the same seed is byte-identical
    out2 = tmp_path / "again"
    pope_command(ann, tmp_path, out2, seed=3, vocab=str(vocab_file), check_images=False,
                 image_list=out / "pope_images.json")
    assert (out2 / "pope_adversarial.jsonl").read_bytes() == first
