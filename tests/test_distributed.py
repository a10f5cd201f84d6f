"""Two ranks through `accelerate launch` with the shipped configs, on this CPU machine (gloo).

Each run asserts what a silently non-data-parallel run would get wrong: accelerate's process count equals
the torch.distributed world size (both 2), and the data are split (12 pairs at 2 per rank take 3 steps an
epoch, not 6); the loss is finite and the saved model is complete and reloads.
DeepSpeed's shm_comm op is not compiled (align/distributed.py), so no run waits for g++.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_data import build_world
from tests.tiny_models import build_tiny

pytestmark = pytest.mark.distributed

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    return {"world": build_world(root / "world"), "llava": build_tiny("llava-clip", root),
            "qwen": build_tiny("qwen2-vl", root)}


def launch(accelerate_config: str, stage: str, config: dict, tmp_path: Path) -> dict:
    import yaml

    cfg_file = tmp_path / f"{stage}.yaml"
    cfg_file.write_text(yaml.safe_dump({"report_to": "none", "logging_steps": 1, "save_strategy": "no",
                                        "max_length": 512, "per_device_train_batch_size": 2, **config}))
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO / "configs" / "accelerate" / f"{accelerate_config}.yaml"), "-m", "align", stage,
           "--config", str(cfg_file)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads(Path(config["output_dir"], "metrics.json").read_text())


def _check_run(metrics: dict, *, stage: int | None, steps: int, epoch: float) -> None:
    from types import SimpleNamespace

    from align.modeling import load_model_and_processor

    assert metrics["num_processes"] == metrics["world_size"] == 2
    assert metrics["deepspeed_zero_stage"] == stage
    assert math.isfinite(metrics["train_loss"]) and metrics["steps"] == steps
    assert metrics["log_history"][-1]["epoch"] == pytest.approx(epoch)   # the ranks split the pairs
    model, processor = load_model_and_processor(SimpleNamespace(model_name_or_path=metrics["model"],
                                                                trust_remote_code=False, model_dtype="auto"))
    total = sum(r["total"] for r in metrics["parameters"].values())
    assert sum(p.numel() for p in model.parameters()) == total > 0   # every weight was gathered and saved
    assert all(float(p.detach().abs().sum()) > 0 for n, p in model.named_parameters() if n.endswith("q_proj.weight"))


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_two_rank_deepspeed_dpo(zero, inputs, tmp_path):
    """Full fine-tuning under ZeRO with mDPO + dense losses and the reference precomputed with images."""
    metrics = launch(zero, "dpo", {
        "model_name_or_path": str(inputs["llava"]), "dataset": str(inputs["world"]["pairs"]),
        "output_dir": str(tmp_path / "out"), "max_steps": 2,
        "loss_type": ["sigmoid", "mdpo_conditional", "mdpo_anchor", "dense"],
        "precompute_ref_log_probs": True, "ref_logps_dir": str(tmp_path / "ref")}, tmp_path)
    _check_run(metrics, stage=int(zero[-1]), steps=2, epoch=2 / 3)
    assert len(list((tmp_path / "ref").glob("*.json"))) == 1


def test_two_rank_zero3_dpo_live_reference_qwen(inputs, tmp_path):
    """TRL's own DPO path under ZeRO-3 (the reference model wrapped in its own engine) on Qwen2-VL."""
    metrics = launch("zero3", "dpo", {
        "model_name_or_path": str(inputs["qwen"]), "dataset": str(inputs["world"]["pairs"]),
        "output_dir": str(tmp_path / "out"), "max_steps": 3}, tmp_path)
    _check_run(metrics, stage=3, steps=3, epoch=1.0)


def test_two_rank_ddp_sft_lora(inputs, tmp_path):
    metrics = launch("ddp", "sft", {
        "model_name_or_path": str(inputs["qwen"]), "dataset": str(inputs["world"]["sft"]),
        "output_dir": str(tmp_path / "out"), "max_steps": 2, "use_peft": True}, tmp_path)
    assert metrics["num_processes"] == metrics["world_size"] == 2 and metrics["deepspeed_zero_stage"] is None
    assert math.isfinite(metrics["train_loss"])
    assert (Path(metrics["model"]) / "adapter_model.safetensors").is_file()
