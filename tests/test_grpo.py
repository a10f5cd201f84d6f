"""GRPO (TRL's GRPOTrainer) with the grounded reward on a tiny LLaVA: a few real steps and resume."""
import json
import math

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from align.tiny import TinyLlavaConfig, create_tiny_llava
    from data_prep.synth import synth_command

    world = tmp_path_factory.mktemp("world") / "world"
    synth_command(world, n_images=40, seed=0)
    small = TinyLlavaConfig(vision_layers=1, text_layers=2, text_hidden=64, vision_hidden=48)
    return world, create_tiny_llava(world, tmp_path_factory.mktemp("llava") / "model", small)


def config_file(tmp_path, model, world, **fields):
    import yaml

    cfg = {"model_name_or_path": str(model), "dataset": str(world / "prompts_pairs.jsonl"),
           "annotations": str(world / "instances_pairs.json"), "vocab": "shapes", "output_dir": str(tmp_path / "run"),
           "per_device_train_batch_size": 4, "num_generations": 4, "max_completion_length": 8, "max_steps": 2,
           "learning_rate": 5.0e-3, "beta": 0.05, "logging_steps": 1, "save_steps": 1, "report_to": "none",
           "seed": 0}
    cfg.update(fields)
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_grpo_steps_change_the_weights_and_log_the_reward(tmp_path, setup, monkeypatch):
    from safetensors.torch import load_file

    from align.cli import main
    from align.modeling import load_model

    world, model = setup
    # An untrained model may name no object at all: every grounded reward is then 0, the group's advantage
    # is 0 and GRPO rightly leaves the weights alone. A small reward on the text's length (which differs
    # between sampled completions) makes the update certain without hiding the grounded reward.
    (tmp_path / "len_reward.py").write_text(
        "def length(completions, **columns):\n"
        "    assert len(columns['objects']) == len(completions)\n"
        "    return [len(str(c)) / 1000.0 for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_file(tmp_path, model, world, extra_reward_function="len_reward:length", extra_reward_weight=1.0)
    assert main(["grpo", "--config", str(config)]) == 0
    out = tmp_path / "run"
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2]
    for h in history:
        assert math.isfinite(h["reward"]) and math.isfinite(h["kl"])
        assert -1.0 <= h["reward"] <= 0.5 + 1.0     # grounded reward's range at the default weights + length term
    assert (out / "curves.png").is_file()
    before, after = load_file(str(model / "model.safetensors")), load_file(str(out / "model" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    load_model(str(out / "model"))


def test_grpo_lora_resumes(tmp_path, setup):
    from align.config import parse_config
    from align.grpo import GRPOStageConfig, run_grpo

    world, model = setup
    config = config_file(tmp_path, model, world, use_peft=True, lora_r=4)
    run_grpo(parse_config(GRPOStageConfig, ["--config", str(config)], "grpo"))
    assert (tmp_path / "run" / "checkpoint-2").is_dir()
    metrics = run_grpo(parse_config(GRPOStageConfig, ["--config", str(config), "--max_steps", "3", "--resume", "true"],
                                    "grpo"))
    assert metrics["resumed_from"].endswith("checkpoint-2") and metrics["steps"] == 3
    assert (tmp_path / "run" / "model" / "adapter_model.safetensors").is_file()
