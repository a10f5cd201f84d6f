"""Pair mining: each strategy on hand-made inputs, expected outputs written by hand; determinism,
exclusion, deduplication, the command's files and the TRL-ready Dataset."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from align.cli import main as cli
from data_prep.annotations import GroundedImage, GroundedObject
from data_prep.mining import MiningOptions
from data_prep.pairs import load_pairs_dataset, mine_pairs
from data_prep.pairstats import MiningStats, length_bias_note
from reward.files import InputError

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[1]


def img(i, names, captions=(), box=(2, 2, 10, 10)):
    return GroundedImage(i, f"{i}.png", 32, 32, [GroundedObject(n, box) for n in names], list(captions))


def world():
    # per image: star 3, ring 4, moon 2, arrow 2, heart 1.  P(ring|star) = 2/3 beats P(heart|moon) = 1/2.
    return [
        img(1, ["star", "moon"], ["A red star and a blue crescent moon.", "A star and a heart."]),
        img(2, ["star", "ring"], ["A star next to a ring."]),
        img(3, ["star", "ring"], ["A green star and a red ring."]),
        img(4, ["moon", "heart"], ["A moon and a heart."]),
        img(5, ["ring", "arrow"], ["A ring and an arrow."]),
        img(6, ["ring", "arrow"], ["An arrow next to a ring."]),
    ]


def mine(images, strategies, seed=0, **options):
    stats = MiningStats()
    responses = options.pop("responses", None)
    exclude = options.pop("exclude", ())
    answers = options.pop("answers", None)
    recs = list(mine_pairs(images, strategies, "shapes", seed=seed, responses=responses, exclude=exclude,
                           options=MiningOptions(**options), stats=stats, answers=answers))
    return recs, stats


def text(rec, side):
    return rec[side][0]["content"][0]["text"]


def only(recs, image_id):
    (rec,) = [r for r in recs if r["image_id"] == image_id]
    return rec


# ----------------------------------------------------------------------------------------- qa
def test_qa_pairs_yes_for_a_present_object_no_for_the_most_tempting_absent_one():
    recs, stats = mine(world(), ["qa"], top_k=1)
    one = [r for r in recs if r["image_id"] == 1]
    assert [(r["edit"], text(r, "chosen"), text(r, "rejected")) for r in one] == [
        ("present", "Yes.", "No."), ("absent", "No.", "Yes.")]
    question = one[0]["prompt"][0]["content"][1]["text"]
    assert question in ("Is there a star in the image?", "Is there a moon in the image?")
    # {star, moon}: ring co-occurs with star in 2 of its 3 images -- the adversarial negative (top_k=1)
    assert one[1]["prompt"][0]["content"][1]["text"] == "Is there a ring in the image?"
    assert one[1]["rejected_hallucinated"] == ["ring"] and one[0]["rejected_hallucinated"] == []
    assert one[0]["prompt"][0]["content"][0] == {"type": "image"}
    # {ring, arrow} (image 5): an object starting with a vowel gets "an"
    five = [r["prompt"][0]["content"][1]["text"] for r in recs if r["image_id"] == 5]
    assert five[0] in ("Is there a ring in the image?", "Is there an arrow in the image?")
    assert len(recs) == 12 and stats.pairs["qa"] == 12


def test_qa_one_question_per_image_keeps_yes_and_no_and_the_same_questions():
    both, _ = mine(world(), ["qa"], top_k=1)
    one, stats = mine(world(), ["qa"], top_k=1, qa_questions="one")
    assert len(one) == 6 == len({r["image_id"] for r in one}) and stats.pairs["qa"] == 6
    assert {r["edit"] for r in one} == {"present", "absent"}   # a coin per image, not one side for all
    # each question is one "both" would ask about that image, with the same answers
    asked = {(r["image_id"], r["prompt"][0]["content"][1]["text"], text(r, "chosen")) for r in both}
    assert all((r["image_id"], r["prompt"][0]["content"][1]["text"], text(r, "chosen")) in asked for r in one)
    with pytest.raises(InputError, match="qa questions"):
        mine(world(), ["qa"], qa_questions="three")


def test_qa_replay_rehearses_the_true_answer_on_both_sides(coco_world):
    prefer, _ = mine(world(), ["qa"], top_k=1)
    replay, stats = mine(world(), ["qa"], top_k=1, qa_replay=True)
    # the same questions and true answers; the rejected side repeats the chosen one, naming nothing absent
    assert [(r["prompt"], text(r, "chosen")) for r in replay] == [(r["prompt"], text(r, "chosen")) for r in prefer]
    assert all(text(r, "rejected") == text(r, "chosen") for r in replay)
    assert {text(r, "chosen") for r in replay} == {"Yes.", "No."}
    assert all(r["rejected_hallucinated"] == [] for r in replay) and stats.pairs["qa"] == 12
    with pytest.raises(InputError, match="qa replay"):
        mine(world(), ["qa"], qa_replay=True, answers={})
    # the command's flag reaches the miner
    assert run_pairs(coco_world, coco_world / "r.jsonl", "--strategy", "qa", "--qa-replay") == 0
    rows = [json.loads(line) for line in (coco_world / "r.jsonl").read_text().splitlines()]
    assert rows and all(text(r, "rejected") == text(r, "chosen") for r in rows)


def test_qa_on_policy_pairs_the_questions_the_model_got_wrong(tmp_path):
    from data_prep.pairs import read_answers

    rows = [  # image 1 is {star, moon}, image 2 {star, ring}; the file's labels are never read
        (1, "ring", "Is there a ring in the image?", ["Yes.", "No.", "No."]),    # wrong once -> No > Yes
        (1, "star", "Is there a star in the image?", ["Yes.", "Yes, there is."]),  # always right -> nothing
        (1, "moon", "Is there a moon in the image?", ["No, there is not.", "Yes."]),  # wrong once -> Yes > No
        (2, "ring", "Is there a ring in the image?", ["No."]),                       # present, said no
    ]
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"image_id": i, "object": o, "prompt": q, "response": r, "label": "no"}) + "\n"
                            for i, o, q, replies in rows for r in replies))
    recs, stats = mine(world(), ["qa"], answers=read_answers(path))
    got = [(r["image_id"], r["prompt"][0]["content"][1]["text"], text(r, "chosen"), text(r, "rejected"),
            r["rejected_hallucinated"], r["source"]) for r in recs]
    assert got == [(1, "Is there a ring in the image?", "No.", "Yes.", ["ring"], "answers"),
                   (1, "Is there a moon in the image?", "Yes.", "No.", [], "answers"),
                   (2, "Is there a ring in the image?", "Yes.", "No.", [], "answers")]
    assert stats.skipped["qa: always answered right"] == 1 and stats.skipped["qa: no answers for the image"] == 4
    with pytest.raises(InputError, match="qa strategy only"):
        mine(world(), ["inject"], answers=read_answers(path))
    path.write_text(json.dumps({"image_id": 1, "prompt": "Is there a ring in the image?", "response": "No."}) + "\n")
    with pytest.raises(InputError, match=r"answers.jsonl.*line 1.*'object'"):
        read_answers(path)


# ----------------------------------------------------------------------------------------- inject
def test_insert_adds_the_most_tempting_absent_object():
    recs, _ = mine(world(), ["inject"], edit_mix={"insert": 1}, top_k=1, compose=False)
    rec = only(recs, 1)
    # the caption naming the absent heart is never a chosen side
    assert text(rec, "chosen") == "A red star and a blue crescent moon."
    assert re.fullmatch(r"A red star, a blue crescent moon and an? (red|blue|green|yellow|purple|orange|white|black) "
                        r"ring\.", text(rec, "rejected"))
    assert rec == {
        "image_id": 1, "images": ["1.png"],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "A red star and a blue crescent moon."}]}],
        "rejected": rec["rejected"], "strategy": "inject", "chosen_hallucinated": [], "rejected_hallucinated": ["ring"],
        "edit": "insert", "objects_added": ["ring"], "objects_removed": [], "source": "caption",
        "chosen_score": None, "rejected_score": None, "rejected_images": [], "corruption": None}
    # {moon, heart}: P(star|moon) = 1/2 + P(star|heart) = 0 ... star is the only candidate
    assert text(only(recs, 4), "rejected") == "A moon, a heart and a star."


def test_popular_and_random_absent_objects():
    recs, _ = mine(world(), ["inject"], edit_mix={"insert": 1}, top_k=1, absent_from="popular")
    assert text(only(recs, 4), "rejected") == "A moon, a heart and a ring."  # ring: 4 images
    assert text(only(recs, 2), "rejected") == "A star next to a ring and an arrow."  # arrow 2 = moon 2: by name
    recs, _ = mine(world(), ["inject"], edit_mix={"insert": 1}, absent_from="random")
    for rec in recs:
        (added,) = rec["objects_added"]
        present = next(im for im in world() if im.image_id == rec["image_id"]).object_names
        assert added not in present


SWAPS = {"star": "A red ring and a blue crescent moon.", "moon": "A red star and a blue ring."}
OMITS = {"star": "A blue crescent moon.", "moon": "A red star."}


@pytest.mark.parametrize("seed", range(6))
def test_swap_and_omit(seed):
    recs, _ = mine(world(), ["inject"], seed=seed, edit_mix={"swap": 1}, top_k=1, compose=False)
    rec = only(recs, 1)
    (old,) = rec["objects_removed"]
    assert (rec["edit"], text(rec, "rejected"), rec["objects_added"], rec["rejected_hallucinated"]) == (
        "swap", SWAPS[old], ["ring"], ["ring"])
    recs, _ = mine(world(), ["inject"], seed=seed, edit_mix={"omit": 1}, compose=False)
    rec = only(recs, 1)
    (old,) = rec["objects_removed"]
    assert (rec["edit"], text(rec, "rejected"), rec["objects_added"], rec["rejected_hallucinated"]) == (
        "omit", OMITS[old], [], [])


@pytest.mark.parametrize("seed", range(4))
def test_omit_from_cooccur_drops_the_object_the_others_predict(seed):
    # {star, ring} (images 2, 3): P(ring|star) = 2/3 beats P(star|ring) = 2/4, so top_k=1 drops the ring
    recs, _ = mine(world(), ["inject"], seed=seed, edit_mix={"omit": 1}, omit_from="cooccur", top_k=1, compose=False)
    assert [(text(only(recs, i), "rejected"), only(recs, i)["objects_removed"]) for i in (2, 3)] == [
        ("A star.", ["ring"]), ("A green star.", ["ring"])]
    # {ring, arrow} (image 5): P(ring|arrow) = 2/2 beats P(arrow|ring) = 2/4
    assert only(recs, 5)["objects_removed"] == ["ring"]


@pytest.mark.parametrize("seed", range(4))
def test_omit_from_habit_drops_what_the_model_adds_where_absent(seed):
    # the model's responses name a heart where there is none (twice) and a star once: where a heart is there
    # (image 4, {moon, heart}), its omit edit drops the heart, not the moon
    responses = {1: ["A star, a moon and a heart."], 2: ["A star, a ring and a heart."], 5: ["A ring and a star."]}
    recs, _ = mine(world(), ["inject"], seed=seed, edit_mix={"omit": 1}, omit_from="habit", top_k=1,
                   compose=False, responses=responses)
    assert (text(only(recs, 4), "rejected"), only(recs, 4)["objects_removed"]) == ("A moon.", ["heart"])
    assert only(recs, 1)["objects_removed"] == ["star"]          # star 1 habit, moon 0
    # no habit among an image's objects: a random one, as omit_from random draws it
    plain, _ = mine(world(), ["inject"], seed=seed, edit_mix={"omit": 1}, compose=False)
    assert only(recs, 6) == only(plain, 6)


@pytest.mark.parametrize("seed", range(4))
def test_qa_present_from_habit_asks_about_what_the_model_adds_where_absent(seed):
    # the responses name a heart where there is none twice and a star once: image 4 {moon, heart} is asked
    # about its heart, image 1 {star, moon} about its star (moon: no habit); the absent-side question is
    # unchanged. Image 5 {ring, arrow} holds no habitual kind: its question is the random one
    responses = {1: ["A star, a moon and a heart."], 2: ["A star, a ring and a heart."], 5: ["A ring and a star."]}
    recs, _ = mine(world(), ["qa"], seed=seed, top_k=1, qa_present_from="habit", responses=responses)
    plain, _ = mine(world(), ["qa"], seed=seed, top_k=1)

    def asked(rs, i, side):
        [r] = [r for r in rs if r["image_id"] == i and r["edit"] == side]
        return r["prompt"][0]["content"][1]["text"]
    assert asked(recs, 4, "present") == "Is there a heart in the image?"
    assert asked(recs, 1, "present") == "Is there a star in the image?"
    assert asked(recs, 1, "absent") == asked(plain, 1, "absent") == "Is there a ring in the image?"
    assert [r for r in recs if r["image_id"] == 5] == [r for r in plain if r["image_id"] == 5]
    with pytest.raises(InputError, match="qa-present-from habit"):
        mine(world(), ["qa"], qa_present_from="habit")
    with pytest.raises(InputError, match="bad qa present-object choice"):
        mine(world(), ["qa"], qa_present_from="often", responses=responses)


def test_inject_from_responses_edits_the_models_own_grounded_text():
    # image 1 {star, moon}: the one response naming only present objects is edited; the one that
    # hallucinates a ring is never a chosen side. Image 2 has no grounded response: its GT caption is used.
    responses = {1: ["A star, a moon and a ring.", "A green star next to a yellow moon."], 2: ["A heart."]}
    recs, _ = mine(world(), ["inject"], edit_mix={"omit": 1}, compose=False, inject_from="responses",
                   responses=responses)
    one = only(recs, 1)
    assert (text(one, "chosen"), one["source"]) == ("A green star next to a yellow moon.", "response")
    assert text(one, "rejected") in ("A green star.", "A yellow moon.")
    assert (text(only(recs, 2), "chosen"), only(recs, 2)["source"]) == ("A star next to a ring.", "caption")
    with pytest.raises(InputError, match="inject-from responses"):
        mine(world(), ["inject"], inject_from="responses")


def test_omit_from_habit_needs_responses():
    with pytest.raises(InputError, match="omit-from habit"):
        mine(world(), ["inject"], omit_from="habit")
    with pytest.raises(InputError, match="bad omitted-object choice"):
        mine(world(), ["inject"], omit_from="often")


def test_omit_falls_back_to_swap_for_a_single_object():
    recs, stats = mine([img(1, ["star"], ["A red star."]), img(2, ["star", "moon"])], ["inject"],
                       edit_mix={"omit": 1, "swap": 1, "insert": 1}, seed=3)
    assert all(r["edit"] != "omit" for r in recs if r["image_id"] == 1)


def test_edit_mix_proportions():
    many = [img(i, ["star", "moon", "ring"][: 2 + i % 2], ["A star and a moon."]) for i in range(300)]
    recs, stats = mine(many, ["inject"], edit_mix={"insert": 1, "omit": 1, "swap": 0})
    edits = [r["edit"] for r in recs]
    assert len(recs) == 300 and "swap" not in edits
    assert 0.4 < edits.count("insert") / 300 < 0.6
    assert stats.summary()["per_strategy"]["inject"]["edits"]["omit"]["pairs"] == edits.count("omit")


def test_edit_mix_from_the_command_line_or_a_pipeline_mapping():
    from data_prep.pairs import parse_edit_mix
    assert parse_edit_mix("insert=2, swap=1,omit") == {"insert": 2.0, "swap": 1.0, "omit": 1.0}
    assert parse_edit_mix({"insert": 1, "omit": 2.5}) == {"insert": 1.0, "omit": 2.5}
    with pytest.raises(InputError, match="bad edit weight"):
        parse_edit_mix({"insert": "lots"})


def test_grounded_caption_or_composed_or_skipped():
    hallucinated_only = [img(1, ["star", "star", "moon"], ["A star and a heart."])]
    recs, stats = mine(hallucinated_only, ["inject"], compose=False)
    assert recs == [] and stats.skipped == {"inject: no grounded caption": 1}
    recs, _ = mine(hallucinated_only, ["inject"], edit_mix={"omit": 1})
    assert text(recs[0], "chosen") == "Two stars and a moon." and recs[0]["source"] == "composed"


def test_length_stats_by_hand():
    images = [img(1, ["star", "moon"], ["A star and a moon."])]
    recs, stats = mine(images + [img(2, ["star", "ring"])], ["inject"], edit_mix={"omit": 1}, compose=False)
    # chosen "A star and a moon." (5 words), rejected "A star." or "A moon." (2 words)
    s = stats.summary()["per_strategy"]["inject"]
    assert s["length"] == {"chosen_words": 5.0, "rejected_words": 2.0, "ratio_of_means": 2.5, "mean_ratio": 2.5}
    assert s["hallucinated_objects"]["rejected"] == 0
    recs, stats = mine(images, ["inject"], edit_mix={"omit": 1}, compose=False, length_match=0.5)
    assert recs == [] and stats.skipped["inject: omit length mismatch"] == 1


def test_a_set_whose_chosen_side_is_shorter_gets_a_length_note():
    images = [img(1, ["star", "moon"], ["A star and a moon."])]
    # swaps keep the length: chosen "A star and a moon." vs e.g. "A star and a ring." (5 words each)
    _, stats = mine(images, ["inject"], edit_mix={"swap": 1}, compose=False)
    summary = stats.summary()
    assert summary["length"]["ratio_of_means"] == 1.0 and length_bias_note(summary) is None
    # a correction: chosen "A red star and a blue moon." (7 words) vs the 10-word response it corrects
    _, stats = mine(images, ["inject", "correct"], edit_mix={"swap": 1}, compose=False,
                    responses={"1": ["A red star, a blue moon and a green ring."]})
    summary = stats.summary()
    assert summary["length"]["ratio_of_means"] == round(12 / 15, 4)       # (5 + 7) / (5 + 10) words
    note = length_bias_note(summary)
    assert note.startswith("the chosen responses are 20 % shorter than the rejected ones over all pairs "
                           "(chosen/rejected words: correct 0.70)")
    assert "--edit-mix insert=1,swap=1,omit=2" in note
    assert length_bias_note(summary, threshold=0.8) is None


# ----------------------------------------------------------------------------------------- rank / correct
RESPONSES = {1: ["A star and a moon.", "A star.", "A star, a moon and a ring.", "A heart."]}
# truth {star, moon}; score = coverage - hallucinated: 1.0, 0.5, 0.0, -1.0


def test_rank_best_against_worst_with_margin():
    recs, _ = mine(world()[:1], ["rank"], responses=RESPONSES)
    (rec,) = recs
    assert (text(rec, "chosen"), text(rec, "rejected")) == ("A star and a moon.", "A heart.")
    assert (rec["chosen_score"], rec["rejected_score"], rec["chosen_hallucinated"], rec["rejected_hallucinated"],
            rec["objects_added"], rec["source"]) == (1.0, -1.0, [], ["heart"], ["heart"], "response")
    recs, stats = mine(world()[:1], ["rank"], responses=RESPONSES, margin=2.5)
    assert recs == [] and stats.skipped == {"rank: score margin below threshold": 1}


def test_rank_length_matched_and_several_per_image():
    recs, _ = mine(world()[:1], ["rank"], responses=RESPONSES, length_match=0.2)
    assert [(text(r, "chosen"), text(r, "rejected")) for r in recs] == [("A star.", "A heart.")]
    recs, _ = mine(world()[:1], ["rank"], responses=RESPONSES, per_image=2)
    assert [(text(r, "chosen"), text(r, "rejected")) for r in recs] == [
        ("A star and a moon.", "A heart."), ("A star.", "A star, a moon and a ring.")]


def test_correct_removes_hallucinated_phrases():
    recs, stats = mine(world()[:1], ["correct"], responses={"1": ["A red star, a blue moon and a green ring.",
                                                                  "A heart.", "A star."]})
    (rec,) = recs
    assert (text(rec, "chosen"), text(rec, "rejected")) == ("A red star and a blue moon.",
                                                            "A red star, a blue moon and a green ring.")
    assert rec["rejected_hallucinated"] == ["ring"] and rec["chosen_hallucinated"] == []
    assert stats.skipped == {"correct: nothing left after removing the hallucinations": 1}
    recs, _ = mine(world()[:1], ["correct"])  # no responses: the GT captions that hallucinate
    assert [(text(r, "chosen"), text(r, "rejected"), r["source"]) for r in recs] == [
        ("A star.", "A star and a heart.", "caption")]


def test_correct_complete_also_names_what_the_response_left_out():
    # truth {star, moon}: the ring goes and the missing moon is added (in the caption's style: coloured)
    responses = {"1": ["A red star and a green ring.", "A star."]}
    recs, _ = mine(world()[:1], ["correct"], responses=responses, correct_complete=True, per_image=2)
    by_rejected = {text(r, "rejected"): r for r in recs}
    fixed = by_rejected["A red star and a green ring."]
    assert re.fullmatch(r"A red star and an? (red|blue|green|yellow|purple|orange|white|black) moon\.",
                        text(fixed, "chosen"))
    assert (fixed["edit"], fixed["rejected_hallucinated"], fixed["objects_added"], fixed["objects_removed"]) == (
        "complete", ["ring"], ["ring"], ["moon"])
    # a response that only leaves the moon out is corrected too (uncoloured, like the response)
    only_missing = by_rejected["A star."]
    assert (text(only_missing, "chosen"), only_missing["edit"], only_missing["rejected_hallucinated"],
            only_missing["objects_removed"]) == ("A star and a moon.", "complete", [], ["moon"])
    # without correct_complete: removal only, and "A star." is nothing to correct
    recs, _ = mine(world()[:1], ["correct"], responses=responses, per_image=2)
    assert [(text(r, "chosen"), text(r, "rejected"), r["edit"]) for r in recs] == [
        ("A red star.", "A red star and a green ring.", "correct")]


def test_correct_only_complete_skips_corrections_that_leave_an_object_out():
    # truth {star, moon}: without the ring, the first response still leaves the moon out
    responses = {"1": ["A red star and a green ring.", "A star, a ring and a moon."]}
    recs, stats = mine(world()[:1], ["correct"], responses=responses, correct_only_complete=True, per_image=2)
    assert [(text(r, "chosen"), text(r, "rejected"), r["edit"]) for r in recs] == [
        ("A star and a moon.", "A star, a ring and a moon.", "correct")]
    assert stats.skipped == {"correct: the correction leaves a present object out": 1}
    # without it both are corrected, the first into a caption without the moon
    recs, _ = mine(world()[:1], ["correct"], responses=responses, per_image=2)
    assert sorted(text(r, "chosen") for r in recs) == ["A red star.", "A star and a moon."]


def test_repeat_weight_keeps_repeating_responses_off_the_chosen_side():
    # truth {star, moon}: "A star, a star and a moon." covers both (1.0) and names the star twice
    responses = {"1": ["A star, a star and a moon.", "A star."]}
    recs, _ = mine(world()[:1], ["rank"], responses=responses)
    assert [(text(r, "chosen"), r["chosen_score"], r["rejected_score"]) for r in recs] == [
        ("A star, a star and a moon.", 1.0, 0.5)]
    recs, _ = mine(world()[:1], ["rank"], responses=responses, repeat_weight=1.0)
    assert [(text(r, "chosen"), text(r, "rejected"), r["chosen_score"], r["rejected_score"]) for r in recs] == [
        ("A star.", "A star, a star and a moon.", 0.5, 0.0)]
    responses = {"1": ["A star, a star, a moon and a ring."]}
    recs, _ = mine(world()[:1], ["correct"], responses=responses)
    assert [text(r, "chosen") for r in recs] == ["A star, a star and a moon."]
    recs, stats = mine(world()[:1], ["correct"], responses=responses, repeat_weight=1.0)
    assert recs == [] and stats.skipped == {"correct: names an object twice": 1}
    with pytest.raises(InputError, match="repeat weight"):
        mine(world()[:1], ["rank"], responses=responses, repeat_weight=-1.0)


def test_exact_duplicates_dropped():
    responses = {1: ["A star and a moon.", "A star, a moon and a ring."]}
    recs, stats = mine(world()[:1], ["rank", "correct"], responses=responses)
    assert [r["strategy"] for r in recs] == ["rank"]  # correct would give the very same pair
    assert stats.skipped == {"correct: exact duplicate": 1}


def test_exclusion_and_per_image_seeding():
    full, _ = mine(world(), ["inject"], absent_from="random", seed=5)
    part, stats = mine(world(), ["inject"], absent_from="random", seed=5, exclude=["1", 4])
    assert {r["image_id"] for r in part} == {2, 3, 5, 6} and stats.n_excluded == 2
    assert part == [r for r in full if r["image_id"] not in (1, 4)]


# ----------------------------------------------------------------------------------------- command
@pytest.fixture
def coco_world(tmp_path):
    (tmp_path / "img").mkdir()
    cats = ["star", "moon", "ring", "heart", "arrow"]
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(cats)]}
    caps = {"images": [], "annotations": []}
    for im in world():
        Image.new("RGB", (32, 32), (40 * im.image_id, 120, 200)).save(tmp_path / "img" / im.file_name)
        coco["images"].append({"id": im.image_id, "file_name": im.file_name, "width": 32, "height": 32})
        for o in im.objects:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": im.image_id,
                                        "category_id": cats.index(o.name) + 1, "bbox": list(o.bbox)})
        for c in im.captions:
            caps["annotations"].append({"id": len(caps["annotations"]) + 1, "image_id": im.image_id, "caption": c})
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    (tmp_path / "captions.json").write_text(json.dumps(caps))
    (tmp_path / "responses.jsonl").write_text("".join(
        json.dumps({"image_id": 1, "prompt": "Describe the image.", "response": r}) + "\n" for r in RESPONSES[1]))
    return tmp_path


def run_pairs(w: Path, out: Path, *extra: str) -> int:
    return cli(["data", "pairs", "--annotations", str(w / "instances.json"), "--captions", str(w / "captions.json"),
                "--images", str(w / "img"), "--out", str(out), "--vocab", "shapes", *extra])


def test_command_is_deterministic_and_writes_stats(coco_world):
    args = ("--strategy", "inject", "rank", "correct", "--responses", str(coco_world / "responses.jsonl"))
    assert run_pairs(coco_world, coco_world / "a" / "pairs.jsonl", *args) == 0
    assert run_pairs(coco_world, coco_world / "b" / "pairs.jsonl", *args) == 0
    a, b = (coco_world / d / "pairs.jsonl" for d in "ab")
    assert a.read_bytes() == b.read_bytes() and a.read_bytes()
    assert (coco_world / "a" / "stats.json").read_bytes() == (coco_world / "b" / "stats.json").read_bytes()
    stats = json.loads((coco_world / "a" / "stats.json").read_text())
    assert set(stats["per_strategy"]) == {"inject", "rank", "correct"}
    assert stats["length"]["chosen_words"] > 0 and stats["length"]["rejected_words"] > 0
    assert stats["pairs"] == len(a.read_text().splitlines())
    assert run_pairs(coco_world, coco_world / "c" / "pairs.jsonl", *args, "--seed", "1") == 0
    assert (coco_world / "c" / "pairs.jsonl").read_bytes() != a.read_bytes()


def test_identical_bytes_across_processes(coco_world):
    """Set iteration order changes with PYTHONHASHSEED: the output must not."""
    outs = []
    for hashseed in ("1", "2"):
        out = coco_world / f"h{hashseed}" / "pairs.jsonl"
        code = ("import sys; from align.cli import main; sys.exit(main(sys.argv[1:]))")
        proc = subprocess.run(
            [sys.executable, "-c", code, "data", "pairs", "--annotations", str(coco_world / "instances.json"),
             "--captions", str(coco_world / "captions.json"), "--images", str(coco_world / "img"), "--out", str(out),
             "--vocab", "shapes", "--strategy", "inject", "--per-image", "3"],
            cwd=ROOT, env=dict(os.environ, PYTHONHASHSEED=hashseed, PYTHONPATH=str(ROOT)), capture_output=True,
            text=True)
        assert proc.returncode == 0, proc.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_command_exclude_file(coco_world):
    (coco_world / "eval_ids.txt").write_text("1\n2\n")
    assert run_pairs(coco_world, coco_world / "p.jsonl", "--strategy", "inject", "--exclude",
                     str(coco_world / "eval_ids.txt")) == 0
    ids = {json.loads(line)["image_id"] for line in (coco_world / "p.jsonl").read_text().splitlines()}
    assert ids == {3, 4, 5, 6}
    assert json.loads((coco_world / "stats.json").read_text())["images_excluded"] == 2


def test_command_notes_a_shorter_chosen_side(coco_world, capsys):
    # image 1's one correctable response: "A star, a moon and a ring." (7 words) -> "A star and a moon." (5)
    args = ("--strategy", "correct", "--responses", str(coco_world / "responses.jsonl"))
    assert run_pairs(coco_world, coco_world / "c" / "pairs.jsonl", *args) == 0
    out = capsys.readouterr().out
    assert "pairs: note: the chosen responses are 29 % shorter than the rejected ones over all pairs " \
           "(chosen/rejected words: correct 0.71)" in out
    assert run_pairs(coco_world, coco_world / "s" / "pairs.jsonl", "--strategy", "inject",
                     "--edit-mix", "swap=1") == 0
    assert "pairs: note" not in capsys.readouterr().out


def test_command_errors_are_one_paragraph(coco_world, capsys):
    assert run_pairs(coco_world, coco_world / "p.jsonl", "--strategy", "rank") == 2
    assert "rank strategy needs sampled responses" in capsys.readouterr().err
    assert run_pairs(coco_world, coco_world / "p.jsonl", "--strategy", "dream") == 2
    assert "unknown strategy 'dream'" in capsys.readouterr().err
    assert not (coco_world / "p.jsonl").exists()


def test_image_strategy_writes_corrupted_copies(coco_world):
    out = coco_world / "pairs" / "pairs.jsonl"
    assert run_pairs(coco_world, out, "--strategy", "image", "--corruptions", "mask", "--compose") == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 6
    for rec in recs:
        assert text(rec, "chosen") == text(rec, "rejected") and rec["edit"] == "mask"
        (rel,) = rec["rejected_images"]
        original = Image.open(coco_world / "img" / rec["images"][0]).convert("RGB")
        corrupted = Image.open(out.parent / rel).convert("RGB")
        assert corrupted.size == original.size
        x, y, w, h = rec["corruption"]["bbox"]
        assert (x, y, w, h) == (2.0, 2.0, 10.0, 10.0)
        # outside the box nothing changes (inside, see test_mask_fills_the_box: these images are one colour)
        assert corrupted.getpixel((20, 20)) == original.getpixel((20, 20))
    for kind in ("crop", "noise", "blur"):
        assert run_pairs(coco_world, out, "--strategy", "image", "--corruptions", kind) == 0
        rec = json.loads(out.read_text().splitlines()[0])
        assert rec["corruption"]["kind"] == kind and (out.parent / rec["rejected_images"][0]).is_file()


def test_mask_fills_the_box(tmp_path):
    from data_prep.corrupt import render_corruption
    im = Image.new("RGB", (20, 10), (0, 0, 0))
    im.paste((200, 100, 50), (0, 0, 10, 10))  # left half coloured: the mean is half of it
    im.save(tmp_path / "a.png")
    render_corruption(tmp_path / "a.png", {"kind": "mask", "object": "star", "bbox": [10, 0, 10, 10]}, tmp_path / "b.png")
    out = Image.open(tmp_path / "b.png")
    assert out.getpixel((15, 5)) == (100, 50, 25) and out.getpixel((5, 5)) == (200, 100, 50)


def test_dataset_loader_is_trl_ready(coco_world):
    out = coco_world / "pairs" / "pairs.jsonl"
    assert run_pairs(coco_world, out, "--strategy", "inject", "image", "--corruptions", "blur") == 0
    ds = load_pairs_dataset(out)
    assert {"images", "prompt", "chosen", "rejected"} <= set(ds.column_names)
    row = ds[0]
    assert isinstance(row["images"][0], Image.Image) and row["images"][0].size == (32, 32)
    image_rows = [r for r in ds if r["strategy"] == "image"]
    assert image_rows and isinstance(image_rows[0]["rejected_images"][0], Image.Image)
    assert row["prompt"][0]["content"][1] == {"type": "text", "text": "Describe the image."}
    data_utils = pytest.importorskip("trl.data_utils")
    assert data_utils.is_conversational(row)
    filled = data_utils.prepare_multimodal_messages(row["prompt"], images=row["images"])
    assert filled[0]["content"][0]["type"] == "image" and filled[0]["content"][0]["image"] is row["images"][0]


@pytest.mark.parametrize("content, expected", [
    ("1\n2\n\n# a comment\nabc\n", {"1", "2", "abc"}),
    ("[1, \"2\", {\"image_id\": 3}]", {"1", "2", "3"}),
    ('{"image_id": 1, "question_id": 1}\n{"image_id": 7, "question_id": 2}\n', {"1", "7"}),
    ('{"seed": 0, "images": [{"image_id": 5, "image": "5.jpg"}]}', {"5"}),
])
def test_exclude_file_formats(tmp_path, content, expected):
    from data_prep.objstats import read_id_list
    path = tmp_path / "ids"
    path.write_text(content)
    assert read_id_list(path) == expected


def test_exclude_file_errors_name_the_record(tmp_path):
    from data_prep.objstats import read_id_list
    from reward.files import InputError
    path = tmp_path / "ids.jsonl"
    path.write_text('{"image_id": 1}\n{"image": 2}\n')
    with pytest.raises(InputError, match=r"ids.jsonl, line 2: item has no 'image_id'"):
        read_id_list(path)
