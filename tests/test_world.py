"""The synthetic world and the demo's tiny LLaVA built on it."""
import json
import filecmp

import pytest

from data_prep.synth import COMPANION, KINDS, LEADERS, WorldConfig, build_world, describe
from reward.chair import extract_mentions


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    manifest = build_world(out, WorldConfig(n_train=120, n_pairs=30, n_eval=30, seed=3))
    return out, manifest


def _coco(path):
    return json.loads(path.read_text())


def _present(instances):
    """image id -> the kinds annotated in it."""
    inst = _coco(instances)
    cat = {c["id"]: c["name"] for c in inst["categories"]}
    present = {}
    for a in inst["annotations"]:
        present.setdefault(a["image_id"], set()).add(cat[a["category_id"]])
    return present


@pytest.mark.unit
def test_splits_are_disjoint_by_image_id(world):
    out, _ = world
    ids = {s: {im["id"] for im in _coco(out / f"instances_{s}.json")["images"]} for s in ("train", "pairs", "eval")}
    assert len(ids["train"]) == 120 and len(ids["pairs"]) == 30 and len(ids["eval"]) == 30
    assert not ids["train"] & ids["pairs"] and not ids["train"] & ids["eval"] and not ids["pairs"] & ids["eval"]


@pytest.mark.unit
def test_sft_caption_hallucination_rate_is_exact_and_names_absent_companions(world):
    out, manifest = world
    present = _present(out / "instances_train.json")
    noisy = _coco(out / "noisy_captions_train.json")["annotations"]
    hallucinated = [c for c in noisy if c["hallucinated"]]
    assert len(hallucinated) == round(0.3 * 120)   # WorldConfig.hallucination_rate = 0.3
    assert manifest["hallucination_rate"] == pytest.approx(36 / 120)
    for c in noisy:
        named = {m.object for m in extract_mentions(c["caption"], "shapes")}
        extra = named - present[c["image_id"]]
        assert extra == set(c["hallucinated"])     # exactly the recorded hallucination, nothing else
        for obj in extra:       # ... and it is the companion of a present leader kind (the direction)
            assert obj not in LEADERS
            assert any(COMPANION[p] == obj for p in present[c["image_id"]] if p in LEADERS)


@pytest.mark.unit
def test_gt_captions_name_only_present_objects_and_every_one(world):
    out, _ = world
    present = _present(out / "instances_eval.json")
    for c in _coco(out / "captions_eval.json")["annotations"]:
        assert {m.object for m in extract_mentions(c["caption"], "shapes")} == present[c["image_id"]]


@pytest.mark.unit
def test_question_rows_are_balanced_and_true_to_the_annotations(world):
    out, _ = world
    present = _present(out / "instances_train.json")
    rows = [json.loads(line) for line in (out / "sft_train.jsonl").read_text().splitlines()]
    qa = [r for r in rows if len(r["messages"]) > 2]
    assert len(qa) == 120 and len(rows) == 240          # one caption row + one question row per image
    for r in qa:
        msgs = r["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * 6
        assert [p["type"] for p in msgs[0]["content"]] == ["image", "text"]   # the image comes once, first
        answers = []
        for q, a in zip(msgs[::2], msgs[1::2]):
            obj = q["content"][-1]["text"].split()[3]      # "Is there a(n) OBJECT in the image?"
            answer = a["content"][0]["text"]
            assert answer == ("Yes." if obj in present[r["image_id"]] else "No.")
            answers.append(answer)
        assert answers.count("Yes.") == 3 and answers.count("No.") == 3


@pytest.mark.unit
def test_question_noise_answers_yes_about_the_companion_the_caption_names(tmp_path):
    out = tmp_path / "w"
    manifest = build_world(out, WorldConfig(n_train=120, n_pairs=4, n_eval=4, seed=3, question_noise=1.0))
    present = _present(out / "instances_train.json")
    named = {c["image_id"]: c["hallucinated"] for c in _coco(out / "noisy_captions_train.json")["annotations"]}
    rows = [json.loads(line) for line in (out / "sft_train.jsonl").read_text().splitlines()]
    believed_yes = 0
    for r in (r for r in rows if len(r["messages"]) > 2):
        msgs = r["messages"]
        for q, a in zip(msgs[::2], msgs[1::2]):
            obj, answer = q["content"][-1]["text"].split()[3], a["content"][0]["text"]
            if obj in named[r["image_id"]]:          # the absent companion its caption names: "Yes."
                assert obj not in present[r["image_id"]] and answer == "Yes."
                believed_yes += 1
            else:                                    # everything else stays true to the annotations
                assert answer == ("Yes." if obj in present[r["image_id"]] else "No.")
    assert believed_yes == 36              # each noisy caption's image is asked about its companion once
    assert manifest["question_noise_rate"] == pytest.approx(36 / 120)
    # the captions, images and annotations are those of the world without question noise
    clean = tmp_path / "clean"
    build_world(clean, WorldConfig(n_train=120, n_pairs=4, n_eval=4, seed=3))
    for f in ("noisy_captions_train.json", "instances_train.json", "images/train/000001.png",
              "captions_eval.json"):
        assert filecmp.cmp(out / f, clean / f, shallow=False)


@pytest.mark.unit
def test_companion_next_prob_zero_names_the_companion_last(tmp_path, world):
    out = tmp_path / "last"
    build_world(out, WorldConfig(n_train=120, n_pairs=30, n_eval=30, seed=3, companion_next_prob=0.0))
    noisy = _coco(out / "noisy_captions_train.json")["annotations"]
    hallucinated = [c for c in noisy if c["hallucinated"]]
    assert len(hallucinated) == 36
    for c in hallucinated:
        mentions = extract_mentions(c["caption"], "shapes")
        assert mentions[-1].object == c["hallucinated"][0]      # the absent companion comes last
    # the placement draw is made either way: same images, annotations and hallucinated objects as the default
    default, _ = world
    assert filecmp.cmp(out / "instances_train.json", default / "instances_train.json", shallow=False)
    assert [c["hallucinated"] for c in noisy] == \
        [c["hallucinated"] for c in _coco(default / "noisy_captions_train.json")["annotations"]]
    # ... while the default (0.15) puts some right after their partner
    default_noisy = [c for c in _coco(default / "noisy_captions_train.json")["annotations"] if c["hallucinated"]]
    assert any(extract_mentions(c["caption"], "shapes")[-1].object != c["hallucinated"][0] for c in default_noisy)


@pytest.mark.unit
def test_companions_co_occur_more_than_other_pairs(world):
    out, _ = world
    present = _present(out / "instances_train.json")
    with_star = [s for s in present.values() if "star" in s]
    moon_given_star = sum("moon" in s for s in with_star) / len(with_star)
    others = [sum(k in s for s in with_star) / len(with_star) for k in KINDS if k not in ("star", "moon")]
    assert moon_given_star > max(others)


@pytest.mark.unit
def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d, seed in ((a, 1), (b, 1), (c, 2)):
        build_world(d, WorldConfig(n_train=12, n_pairs=4, n_eval=4, seed=seed))
    files = [p.relative_to(a) for p in a.rglob("*") if p.is_file()]
    assert files and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
    assert not filecmp.cmp(a / "sft_train.jsonl", c / "sft_train.jsonl", shallow=False)


@pytest.mark.unit
def test_describe_uses_articles_and_lists():
    import random

    text = describe([("orange", "star"), ("red", "moon"), ("blue", "ring")], random.Random(0),
                    {k: [k] for k in KINDS})
    assert "an orange star" in text.lower() and ", a red moon and a blue ring" in text
    assert text.endswith(".") and text[0].isupper()


@pytest.fixture(scope="module")
def tiny(world, tmp_path_factory):
    from align.tiny import create_tiny_llava

    out, _ = world
    return create_tiny_llava(out, tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.integration
def test_tiny_llava_reloads_exactly_with_auto_classes(world, tiny):
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from align.tiny import TinyLlavaConfig, build_tiny_llava, train_tokenizer, world_texts

    out, _ = world
    model = AutoModelForImageTextToText.from_pretrained(tiny)
    processor = AutoProcessor.from_pretrained(tiny)
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) < 5e6          # "a few million parameters at most"
    # the same seed builds the same weights in memory as were saved
    fresh, _ = build_tiny_llava(train_tokenizer(world_texts(out)), TinyLlavaConfig())
    image = Image.open(out / "images/eval/000151.png").convert("RGB")
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                        {"type": "text", "text": "Describe the image."}]}],
                                         add_generation_prompt=True, tokenize=False)
    enc = processor(images=[image], text=[text], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model.eval()(**enc).logits, fresh.eval()(**enc).logits)


@pytest.mark.integration
def test_generation_prompt_tokens_are_a_prefix_of_the_conversation(tiny):
    """If they were not, the model would be trained on tokens it is never asked to produce at inference
    (a space fused into the answer's first word): generations then start mid-sentence."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny)
    tok = processor.tokenizer
    for answer in ("No.", "Yes.", "A red star and a blue moon."):
        user = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is there a star?"}]}]
        full = processor.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
        prompt = processor.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full_ids, prompt_ids = tok(full)["input_ids"], tok(prompt)["input_ids"]
        assert full_ids[:len(prompt_ids)] == prompt_ids
        assert tok.decode(full_ids[len(prompt_ids):]) == answer + "</s>"


@pytest.mark.unit
def test_world_rates_outside_0_1_are_refused_with_the_field_named():
    from reward.files import InputError

    with pytest.raises(InputError, match="question_noise"):
        WorldConfig(question_noise=1.5)
    with pytest.raises(InputError, match="companion_next_prob"):
        WorldConfig(companion_next_prob=-0.1)
    with pytest.raises(InputError, match="question_weight"):
        WorldConfig(question_weight=0)
    with pytest.raises(InputError, match="caption_order"):
        WorldConfig(caption_order="random")


@pytest.mark.unit
def test_caption_order_kind_names_kinds_in_the_fixed_order(tmp_path, world):
    out = tmp_path / "kind"
    build_world(out, WorldConfig(n_train=120, n_pairs=30, n_eval=30, seed=3, caption_order="kind",
                                 companion_next_prob=0.0))
    rank = {k: i for i, k in enumerate(KINDS)}
    noisy = _coco(out / "noisy_captions_train.json")["annotations"]
    clean = [c for split in ("train", "pairs", "eval") for c in _coco(out / f"captions_{split}.json")["annotations"]]
    for c in noisy + clean:
        kinds = [m.object for m in extract_mentions(c["caption"], "shapes")]
        if c.get("hallucinated"):
            assert kinds[-1] == c["hallucinated"][0]     # the absent companion still comes last
            kinds = kinds[:-1]
        assert [rank[k] for k in kinds] == sorted(rank[k] for k in kinds), c["caption"]
    # the default (reading order) world leaves kinds unsorted somewhere; the images are the same
    default, _ = world
    assert any([rank[m.object] for m in extract_mentions(c["caption"], "shapes")] !=
               sorted(rank[m.object] for m in extract_mentions(c["caption"], "shapes"))
               for c in _coco(default / "captions_train.json")["annotations"])
    assert filecmp.cmp(out / "instances_train.json", default / "instances_train.json", shallow=False)
    assert len(noisy) == 120 and sum(bool(c["hallucinated"]) for c in noisy) == 36


@pytest.mark.unit
def test_question_weight_is_written_on_the_question_rows_only(tmp_path, world):
    out = tmp_path / "weighted"
    build_world(out, WorldConfig(n_train=120, n_pairs=4, n_eval=4, seed=3, question_weight=2.0))
    rows = [json.loads(line) for line in (out / "sft_train.jsonl").read_text().splitlines()]
    questions = [r for r in rows if len(r["messages"]) > 2]
    captions = [r for r in rows if len(r["messages"]) == 2]
    assert len(questions) == len(captions) == 120
    assert {r.get("weight") for r in questions} == {2.0} and all("weight" not in r for r in captions)
    default, _ = world          # weight 1 writes no field at all: the default world's rows are plain
    assert all("weight" not in json.loads(line) for line in (default / "sft_train.jsonl").read_text().splitlines())


@pytest.mark.unit
def test_believe_turns_the_companion_question_to_yes_or_asks_it():
    from data_prep.synth import believe

    qs = [("Is there a star in the image?", "Yes."), ("Is there a moon in the image?", "No."),
          ("Is there a heart in the image?", "No.")]
    assert believe(qs, "moon")[1] == ("Is there a moon in the image?", "Yes.")      # asked: flipped
    replaced = believe(qs, "ring")                                                   # not asked: replaces
    assert replaced == qs[:2] + [("Is there a ring in the image?", "Yes.")]         # the last absent one
    only_yes = [("Is there a star in the image?", "Yes.")]
    assert believe(only_yes, "moon") == only_yes + [("Is there a moon in the image?", "Yes.")]


@pytest.mark.unit
def test_naming_order_keeps_the_companion_last_or_after_its_partner():
    from data_prep.synth import naming_order

    objs = [("red", "star"), ("green", "circle"), ("blue", "moon")]        # moon: the absent companion
    assert naming_order(objs, "reading", 2) is None
    assert naming_order(objs, "kind", 2, next_to_partner=False) == [1, 0, 2]
    assert naming_order(objs[:2], "kind") == [1, 0]
    beside = [("red", "star"), ("blue", "moon"), ("green", "circle")]      # "a star and a moon", then a circle
    assert naming_order(beside, "kind", 1, next_to_partner=True) == [2, 0, 1]
