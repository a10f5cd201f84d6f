"""RL prompt rows: prompts joined with grounded annotations, in the layout GRPO and PPO read."""
import json
from pathlib import Path

import pytest

from reward.files import InputError

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from data_prep.synth import synth_command

    out = tmp_path_factory.mktemp("world") / "world"
    synth_command(out, n_images=30, seed=1)
    return out


def coco_objects(world: Path, split: str) -> dict[str, list[str]]:
    """Ground truth straight from the COCO file, independently of the loader under test."""
    data = json.loads((world / f"instances_{split}.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    out: dict[str, set] = {str(im["id"]): set() for im in data["images"]}
    for ann in data["annotations"]:
        out[str(ann["image_id"])].add(names[ann["category_id"]])
    return {k: sorted(v) for k, v in out.items()}


def test_prompts_join_their_images_objects(world):
    from align.rl_data import load_rl_dataset

    ds = load_rl_dataset(world / "prompts_pairs.jsonl", world / "instances_pairs.json", vocab="shapes")
    truth = coco_objects(world, "pairs")
    prompts = [json.loads(line) for line in (world / "prompts_pairs.jsonl").read_text().splitlines()]
    assert len(ds) == len(prompts)
    for row, prompt in zip(ds, prompts):
        assert row["image_id"] == str(prompt["image_id"])
        assert sorted(row["objects"]) == truth[row["image_id"]]
        assert row["images"][0].size == (64, 64)                       # decoded to PIL
        (turn,) = row["prompt"]
        assert turn["role"] == "user"
        assert [p["type"] for p in turn["content"]] == ["image", "text"]
        assert turn["content"][1]["text"] == prompt["prompt"]


def test_objects_in_the_prompt_record_need_no_annotations(tmp_path, world):
    from align.rl_data import load_rl_rows

    image = sorted((world / "images" / "eval").glob("*.png"))[0]
    (tmp_path / "p.jsonl").write_text(json.dumps({"image_id": 7, "image": str(image.relative_to(world)),
                                                  "prompt": "Describe.", "objects": ["star", {"name": "moon"}]}))
    (row,) = load_rl_rows(tmp_path / "p.jsonl", images_dir=world)
    assert row["objects"] == ["star", "moon"] and row["image_id"] == "7"


def test_missing_ground_truth_is_an_input_error(tmp_path, world):
    from align.rl_data import load_rl_rows

    with pytest.raises(InputError, match="no 'objects' and no annotation file"):
        load_rl_rows(world / "prompts_eval.jsonl")
    # prompts of one split against the annotations of another: the first prompt's id is not there
    with pytest.raises(InputError, match="has no entry in the annotations") as e:
        load_rl_rows(world / "prompts_eval.jsonl", world / "instances_pairs.json")
    assert "line 1" in str(e.value)


def test_rows_feed_the_grounded_reward_as_trl_calls_it(world):
    from types import SimpleNamespace

    from align.rl_data import load_rl_rows, reward_functions

    rows = load_rl_rows(world / "prompts_pairs.jsonl", world / "instances_pairs.json", vocab="shapes")[:2]
    cfg = SimpleNamespace(vocab="shapes", hallucination_weight=1.0, coverage_weight=0.5, extra_reward_function=None)
    ((reward, weight),) = reward_functions(cfg)
    assert weight == 1.0
    present = rows[0]["objects"]
    absent = next(o for o in ("star", "moon", "heart", "ring", "arrow", "square") if o not in present)
    # all objects named -> coverage 1 -> 0.5; one absent object named alone -> penalty 1 -> -1.0
    completions = ["There is a " + " and a ".join(present) + ".</s>", f"<image> A {absent}."]
    scores = reward(completions, objects=[present, present], image_id=[r["image_id"] for r in rows[:2]])
    assert scores == [0.5, -1.0]


def test_extra_reward_spec_errors():
    from align.rl_data import load_extra_reward

    with pytest.raises(InputError, match="cannot be imported"):
        load_extra_reward("no_such_module_xyz:f")
    assert load_extra_reward("json:dumps") is json.dumps
