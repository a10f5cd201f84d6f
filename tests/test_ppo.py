"""PPO on tiny VLMs: the rollout's log-probabilities, a few real steps (LLaVA and Qwen2-VL, full and LoRA),
the extra reward hook, and resume. One tiny world and one tiny LLaVA for the whole module."""
import json
import math
import shutil
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parent))   # tests/tiny_models.py

# what every PPO step must log, finite
LOGGED = ("reward", "grounded_reward", "kl", "kl_coef", "entropy", "clipfrac", "approxkl", "policy_loss",
          "value_loss", "value_clipfrac", "response_length", "hallucination_rate", "coverage", "lr")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from data_prep.synth import synth_command

    out = tmp_path_factory.mktemp("world") / "world"
    synth_command(out, n_images=40, seed=0)
    return out


@pytest.fixture(scope="module")
def llava(world, tmp_path_factory):
    from align.tiny import TinyLlavaConfig, create_tiny_llava

    small = TinyLlavaConfig(vision_layers=1, text_layers=2, text_hidden=64, vision_hidden=48)
    return create_tiny_llava(world, tmp_path_factory.mktemp("llava") / "model", small)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from tiny_models import build_tiny

    return build_tiny("qwen2-vl", tmp_path_factory.mktemp("qwen"))


def config_file(tmp_path, model, world, **fields) -> Path:
    import yaml

    cfg = {"model_name_or_path": str(model), "dataset": str(world / "prompts_pairs.jsonl"),
           "annotations": str(world / "instances_pairs.json"), "vocab": "shapes",
           "output_dir": str(tmp_path / "run"), "rollout_batch_size": 4, "per_device_train_batch_size": 2,
           "per_device_eval_batch_size": 4, "num_ppo_epochs": 2, "num_mini_batches": 1, "max_new_tokens": 8,
           "max_steps": 2, "learning_rate": 5.0e-3, "logging_steps": 1, "save_steps": 100, "report_to": "none",
           "seed": 0}
    cfg.update(fields)
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(config: Path, *overrides: str) -> dict:
    from align.config import parse_config
    from align.ppo import PPOStageConfig, run_ppo

    return run_ppo(parse_config(PPOStageConfig, ["--config", str(config), *overrides], "ppo"))


def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(next(path.glob("*.safetensors"))))


def check_history(run_dir: Path, steps: int) -> list[dict]:
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["step"] for h in history] == list(range(1, steps + 1))
    for h in history:
        for key in LOGGED:
            assert math.isfinite(h[key]), (key, h)
        assert h["response_length"] > 0
    assert (run_dir / "curves.png").stat().st_size > 1000
    return history


@pytest.mark.parametrize("family", ["llava", "qwen2-vl"])
def test_rollout_logprobs_are_those_of_the_sampling_distribution(family, llava, qwen, world):
    """The no-grad forward PPO uses for old log-probs must score exactly what generate() sampled, with
    left-padded prompts of different lengths (otherwise the first PPO ratio is not 1)."""
    from PIL import Image

    from align.modeling import load_model, load_processor
    from align.ppo import PolicyWithValueHead, response_forward, response_mask, suppressed_tokens

    path = str(llava if family == "llava" else qwen)
    model, processor = load_model(path), load_processor(path)
    model.eval()
    tok = processor.tokenizer
    tok.padding_side = "left"
    images = [[Image.open(p).convert("RGB")] for p in sorted((world / "images" / "pairs").glob("*.png"))[:3]]
    texts = [processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": t}]}],
        add_generation_prompt=True, tokenize=False) for t in ("Describe the image.", "Hi", "Name every shape here.")]
    inputs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any()          # the prompts really are padded
    suppressed = suppressed_tokens(model, processor)
    assert suppressed                                      # the image placeholder at least
    torch.manual_seed(0)
    out = model.generate(**inputs, do_sample=True, temperature=0.7, top_k=0, top_p=1.0, max_new_tokens=8,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=tok.pad_token_id,
                         eos_token_id=[tok.eos_token_id], suppress_tokens=suppressed)
    responses = out.sequences[:, inputs["input_ids"].shape[1]:]
    mask = response_mask(responses, [tok.eos_token_id])
    sampled = torch.stack(out.logits, 1).float() / 0.7
    sampled[..., suppressed] = -1e9
    expected = torch.log_softmax(sampled, -1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
    wrapped = PolicyWithValueHead(model, model.config.get_text_config().hidden_size)
    with torch.no_grad():
        logprobs, _, values = response_forward(wrapped, dict(inputs), responses, 0.7, suppressed)
    assert values.shape == responses.shape
    assert ((logprobs - expected).abs() * mask).max() < 1e-4


def test_ppo_full_llava_through_the_cli(tmp_path, llava, world):
    from align.cli import main
    from align.modeling import load_model, part_of

    config = config_file(tmp_path, llava, world)
    assert main(["ppo", "--config", str(config), "--max_steps", "2"]) == 0
    out = tmp_path / "run"
    check_history(out, 2)
    before, after = weights(llava), weights(out / "model")
    changed = {part_of(k) for k in before if not torch.equal(before[k], after[k])}
    assert "language" in changed and "projector" in changed
    assert "vision" not in changed                          # frozen by default
    assert (out / "value_head.pt").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["final"]["step"] == 2
    load_model(str(out / "model"))                         # a normal checkpoint


def test_ppo_lora_llava_with_extra_reward(tmp_path, llava, world, monkeypatch):
    from align.modeling import load_model

    (tmp_path / "my_reward.py").write_text(
        "def constant(completions, **columns):\n"
        "    assert len(columns['objects']) == len(completions) and 'images' in columns\n"
        "    return [1.0] * len(completions)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = config_file(tmp_path, llava, world, use_peft=True, lora_r=4, extra_reward_function="my_reward:constant",
                         extra_reward_weight=2.0, target_kl=0.01, kl_horizon=100)
    run(config)
    out = tmp_path / "run"
    history = check_history(out, 2)
    for h in history:   # the hook's score, weighted, on top of the grounded reward
        assert h["reward"] - h["grounded_reward"] == pytest.approx(2.0, abs=1e-4)
    assert history[1]["kl_coef"] != history[0]["kl_coef"]           # adaptive KL moved
    assert (out / "model" / "adapter_model.safetensors").is_file()
    adapter = weights(out / "model")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())   # lora_B starts at zero
    base = load_model(str(llava)).state_dict()
    merged = load_model(str(out / "model")).merge_and_unload().state_dict()   # base + adapter, merged
    assert merged.keys() == base.keys()
    assert any(not torch.equal(merged[k], base[k]) for k in base if "q_proj" in k)


@pytest.mark.parametrize("use_peft", [False, True])
def test_ppo_qwen2_vl(tmp_path, qwen, world, use_peft):
    config = config_file(tmp_path, qwen, world, use_peft=use_peft, lora_r=4)
    run(config)
    out = tmp_path / "run"
    check_history(out, 2)
    after = weights(out / "model")
    if use_peft:
        assert any("lora_B" in k and v.abs().sum() > 0 for k, v in after.items())
    else:
        before = weights(qwen)
        # (on disk Qwen2-VL keeps its original key names: model.layers.* is the language model)
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("model.layers"))


def test_ppo_resume_reproduces_the_uninterrupted_run(tmp_path, llava, world):
    config = config_file(tmp_path, llava, world, max_steps=3, save_steps=1, save_total_limit=2)
    run(config)
    first = tmp_path / "run"
    assert sorted(p.name for p in first.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    # an interrupted run: only checkpoint-1 got written
    second = tmp_path / "resumed"
    second.mkdir()
    shutil.copytree(first / "checkpoint-1", second / "checkpoint-1")
    metrics = run(config, "--output_dir", str(second), "--resume", "true")
    assert metrics["resumed_from"].endswith("checkpoint-1")
    a, b = weights(first / "model"), weights(second / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    untimed = lambda h: {k: v for k, v in h.items() if not k.endswith("_s")}  # noqa: E731
    assert [untimed(h) for h in check_history(first, 3)] == [untimed(h) for h in check_history(second, 3)]


@pytest.mark.distributed
def test_ppo_data_parallel_on_two_cpu_processes(tmp_path, llava, world):
    """`accelerate launch` with two ranks on gloo: both processes really train (not two copies of rank 0)."""
    import os
    import subprocess

    config = config_file(tmp_path, llava, world, max_steps=1)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "align", "ppo",
         "--config", str(config)],
        cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2
    check_history(tmp_path / "run", 1)
