"""AMBER-style per-response stats, corpus metrics, and the grounded reward as TRL calls it."""
import pytest

from reward.grounded import GroundedReward, amber_metrics, response_stats

pytestmark = pytest.mark.unit


def test_response_stats():
    s = response_stats("A dog and a dog chase a cat near a bench.", {"dog", "bench", "person"})
    assert s["mentioned"] == ["dog", "dog", "cat", "bench"]
    assert s["hallucinated"] == ["cat"]
    assert s["hallucinated_objects"] == ["cat"]
    assert s["covered_objects"] == ["bench", "dog"]
    assert s["coverage"] == 2 / 3
    assert s["chair"] == 1 / 4
    assert s["has_hallucination"] is True
    clean = response_stats("A dog.", {"dog"})
    assert clean["has_hallucination"] is False and clean["coverage"] == 1.0


def test_ground_truth_names_are_canonicalised():
    s = response_stats("Two men and a puppy.", ["people", {"name": "dog"}, "unicorn"])
    assert s["covered_objects"] == ["dog", "person"] and s["n_gt_objects"] == 2


def test_amber_metrics_pool_counts():
    responses = [{"image_id": 1, "response": "A dog and a cat."},    # 2 mentions, 1 hallucinated
                 {"image_id": 2, "response": "A man."},              # 1 mention, 0
                 {"image_id": 3, "caption": "Nothing."}]             # 0 mentions
    truth = {1: {"dog", "chair"}, 2: {"person"}, 3: {"car"}}
    m = amber_metrics(responses, truth)
    assert m["chair"] == 1 / 3
    assert m["cover"] == 2 / 4          # dog, person of dog, chair, person, car
    assert m["hal"] == 1 / 3
    assert m["n_responses"] == 3


def test_reward_is_coverage_minus_hallucination_share():
    r = GroundedReward("coco", hallucination_weight=1.0, coverage_weight=0.5)
    objects = ["dog", "bench"]
    assert r.score("A dog on a bench.", objects) == 0.5                     # full coverage, no hallucination
    assert r.score("A dog.", objects) == 0.25                               # half coverage
    assert r.score("A dog and a cat.", objects) == 0.25 - 0.5               # 1 hallucinated, 1 covered
    assert r.score("A cat and a cat and a cat.", objects) == -1.0           # only hallucinations
    assert r.score("Nothing here.", objects) == 0.0


def test_reward_scale_does_not_grow_with_length():
    r = GroundedReward("coco")
    objects = ["dog"]
    short, long = r.score("A cat.", objects), r.score("A cat. " * 50, objects)
    assert short == long == -1.0
    # repeating a correct object does not dilute a hallucination
    assert r.score("A dog, a dog, a dog, a dog and a cat.", objects) == r.score("A dog and a cat.", objects)
    # every hallucinated mention costs more
    assert r.score("A dog, a cat and a cat.", objects) < r.score("A dog and a cat.", objects)


def test_reward_as_trl_reward_function():
    r = GroundedReward("shapes", objects_column="objects", special_tokens=["<|custom|>"])
    assert r.__name__ == "grounded_reward"
    logged = {}
    completions = [
        "Two stars and a moon.</s>",
        [{"role": "assistant", "content": "<image> A star."}],
        [{"role": "assistant", "content": [{"type": "text", "text": "A heart<|custom|>"}]}],
    ]
    rewards = r(prompts=["p"] * 3, completions=completions, completion_ids=[[1]] * 3,
                objects=[["star", "moon"], ["star"], ["Stars"]], trainer_state=None,
                log_metric=lambda name, value: logged.setdefault(name, value), log_extra=lambda *a: None)
    assert rewards == [0.5, 0.5, -1.0]
    assert "grounded_reward/mean" in logged


def test_reward_strips_image_and_special_tokens():
    r = GroundedReward("coco", special_tokens=["<img_token>"])
    assert r.clean("<image><|image_pad|><|vision_start|>a dog</s><img_token>") .split() == ["a", "dog"]
    assert r.score("<image>\nA dog.<|im_end|>", ["dog"]) == 0.5


def test_reward_ground_truth_accepts_surface_forms_and_object_dicts():
    r = GroundedReward("coco")
    assert r.score("A man.", ["people"]) == 0.5              # "people" is a form of person
    assert r.score("A man.", [{"name": "person", "bbox": [0, 0, 1, 1]}]) == 0.5


def test_reward_needs_its_column():
    r = GroundedReward("coco", objects_column="gt")
    with pytest.raises(KeyError, match="gt"):
        r(completions=["a dog"], objects=[["dog"]])
