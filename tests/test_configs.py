"""Every shipped config parses with the libraries' own parsers; the dry run builds the real families offline."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.unit

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAMILY_DIRS = sorted(p for p in CONFIGS.iterdir() if (p / "config.json").is_file())
DEEPSPEED = sorted((CONFIGS / "deepspeed").glob("*.json"))
ACCELERATE = sorted((CONFIGS / "accelerate").glob("*.yaml"))
# published parameter counts of the hub checkpoints (model cards), in billions
PUBLISHED = {"llava-1.5-7b": 7.06, "qwen2-vl-7b": 8.29, "qwen2.5-vl-7b": 8.29, "idefics3-8b": 8.46,
             "smolvlm-256m": 0.256}


def test_every_family_ships_its_configs():
    assert {p.name for p in FAMILY_DIRS} == set(PUBLISHED)
    for family in FAMILY_DIRS:
        for stage in ("sft", "dpo"):
            text = (family / f"{stage}.yaml").read_text()
            # the header shows how to launch it
            assert f"halign {stage} --config configs/{family.name}/{stage}.yaml" in text
            assert "accelerate launch --config_file configs/accelerate/" in text
    assert {p.stem for p in DEEPSPEED} == {"zero2", "zero3", "zero3_offload"}
    assert {p.stem for p in ACCELERATE} == {"zero2", "zero3", "zero3_offload", "ddp"}


@pytest.mark.parametrize("family", FAMILY_DIRS, ids=lambda p: p.name)
def test_stage_configs_parse(family):
    from align.config import parse_config
    from align.dpo import DPOStageConfig
    from align.sft import SFTStageConfig

    sft = parse_config(SFTStageConfig, ["--config", str(family / "sft.yaml")], "sft")
    dpo = parse_config(DPOStageConfig, ["--config", str(family / "dpo.yaml")], "dpo")
    hub = json.loads((family / "config.json").read_text())["_name_or_path"]
    assert sft.model_name_or_path == dpo.model_name_or_path == hub
    assert dpo.precompute_ref_log_probs and "mdpo_conditional" in dpo.loss_type
    assert sft.max_length == dpo.max_length and sft.check_image_tokens


@pytest.mark.parametrize("family", FAMILY_DIRS, ids=lambda p: p.name)
def test_dry_run_builds_the_real_family_from_its_config(family, capsys):
    from align.config import parse_config
    from align.dpo import DPOStageConfig
    from align.dryrun import dry_run

    cfg = parse_config(DPOStageConfig, ["--config", str(family / "dpo.yaml"), "--use_peft", "false"], "dpo")
    full = dry_run(cfg, "dpo", {"zero_stage": 3, "num_gpus": 8})
    assert full["total"] / 1e9 == pytest.approx(PUBLISHED[family.name], rel=0.01)
    assert full["parameters"]["vision"]["trainable"] == 0 < full["parameters"]["vision"]["total"]
    # full fine-tuning with the reference precomputed: no reference copy
    assert not full["reference_copy"] and full["memory_bytes"]["reference_gpu"] == 0
    lora = dry_run(parse_config(DPOStageConfig, ["--config", str(family / "dpo.yaml")], "dpo"), "dpo",
                   {"zero_stage": 3, "num_gpus": 8})
    assert 0 < lora["parameters"]["language"]["trainable"] < 0.05 * lora["parameters"]["language"]["total"]
    assert lora["memory_bytes"]["config_gpu"] < full["memory_bytes"]["config_gpu"]
    assert "meta device, no weights read" in capsys.readouterr().out


def test_dry_run_memory_follows_deepspeed_formulas(capsys):
    """A 7B-class count worked by hand with DeepSpeed's model-state formulas (16-bit params + fp32 Adam)."""
    from align.dryrun import memory_estimate

    total, largest = 7_000_000_000, 500_000_000
    # ZeRO-3, 8 GPUs, no offload, all trained: 4 * largest + 18 * total / 8 bytes per GPU
    mem = memory_estimate(total, total, largest, {"zero_stage": 3, "num_gpus": 8, "num_nodes": 1,
                                                  "offload": "none"}, reference_copy=False)
    assert mem["all_trained_gpu"] == 4 * 500_000_000 + 18 * 7_000_000_000 // 8 == 17_750_000_000
    # ZeRO-2, 8 GPUs: 2 * total (whole 16-bit weights) + 18 * total / 8
    mem = memory_estimate(total, total, largest, {"zero_stage": 2, "num_gpus": 8, "num_nodes": 1,
                                                  "offload": "none"}, reference_copy=True)
    assert mem["all_trained_gpu"] == 14_000_000_000 + 15_750_000_000
    assert mem["reference_gpu"] == 14_000_000_000          # a whole 16-bit reference copy on each GPU
    # LoRA-like: 1 % trained under ZeRO-3 on 8 GPUs: frozen 16-bit weights sharded 8 ways
    mem = memory_estimate(total, 70_000_000, largest, {"zero_stage": 3, "num_gpus": 8, "num_nodes": 1,
                                                       "offload": "none"}, reference_copy=False)
    assert mem["frozen_gpu"] == 2 * 6_930_000_000 // 8
    assert mem["trainable_gpu"] == 4 * 70_000_000 + 18 * 70_000_000 // 8


def test_dry_run_reads_the_accelerate_config():
    from align.dryrun import hardware_from_options, split_dry_run_args

    argv, options = split_dry_run_args(["--config", "x.yaml", "--dry-run", "--accelerate_config",
                                        str(CONFIGS / "accelerate" / "zero3_offload.yaml"), "--num-gpus", "4"])
    assert argv == ["--config", "x.yaml"]
    assert hardware_from_options(options) == {"zero_stage": 3, "num_gpus": 4, "num_nodes": 1, "offload": "all"}
    assert split_dry_run_args(["--config", "x.yaml"]) == (["--config", "x.yaml"], None)


@pytest.mark.parametrize("path", DEEPSPEED, ids=lambda p: p.name)
def test_deepspeed_configs_pass_deepspeed_own_parser(path):
    import torch
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    from align.distributed import deepspeed_config_problems

    raw = json.loads(path.read_text())
    assert deepspeed_config_problems(raw) == []
    # fill the "auto" values the way the Trainer does, then let DeepSpeed parse the result
    args = TrainingArguments(output_dir="unused", per_device_train_batch_size=2, gradient_accumulation_steps=4,
                             use_cpu=True, report_to="none")
    hf = HfTrainerDeepSpeedConfig(str(path))
    hf.trainer_config_process(args)
    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(hidden_size=4096, to_dict=lambda: {"hidden_size": 4096})
    hf.trainer_config_finalize(args, model, num_training_steps=100)
    assert "auto" not in json.dumps(hf.config)
    parsed = DeepSpeedConfig(hf.config)
    stage = {"zero2": 2, "zero3": 3, "zero3_offload": 3}[path.stem]
    assert parsed.zero_optimization_stage == stage
    assert parsed.train_micro_batch_size_per_gpu == 2 and parsed.gradient_accumulation_steps == 4
    assert parsed.zero_config.offload_param is not None if path.stem == "zero3_offload" else \
        parsed.zero_config.offload_param is None
    if stage == 3:   # without it, save_model under ZeRO-3 writes no full weights
        assert parsed.zero_config.gather_16bit_weights_on_model_save


def test_misspelled_top_level_deepspeed_key_is_caught(tmp_path):
    from align.distributed import check_deepspeed_config_file
    from reward.files import InputError

    raw = json.loads((CONFIGS / "deepspeed" / "zero3.json").read_text())
    raw["zero_optimisation"] = raw.pop("zero_optimization")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="'zero_optimisation' \\(did you mean 'zero_optimization'\\?\\)"):
        check_deepspeed_config_file(bad)


@pytest.mark.parametrize("path", ACCELERATE, ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    assert cfg.num_processes >= 1 and cfg.num_machines == 1 and not cfg.use_cpu
    if path.stem == "ddp":
        assert str(cfg.distributed_type).endswith("MULTI_GPU")
        return
    assert str(cfg.distributed_type).endswith("DEEPSPEED")
    ds_file = cfg.deepspeed_config["deepspeed_config_file"]
    assert ds_file == f"configs/deepspeed/{path.stem}.json" and (CONFIGS.parent / ds_file).is_file()
    assert path.read_text().startswith(f"# accelerate launch --config_file configs/accelerate/{path.stem}.yaml")


def test_data_parallel_check_refuses_a_rank_that_sees_one_process(monkeypatch):
    from align.distributed import check_data_parallel
    from reward.files import InputError

    monkeypatch.setenv("WORLD_SIZE", "2")
    trainer = SimpleNamespace(accelerator=SimpleNamespace(num_processes=1, is_main_process=True,
                                                          state=SimpleNamespace(deepspeed_plugin=None)))
    with pytest.raises(InputError, match="accelerate sees 1 process\\(es\\) but 2 were launched"):
        check_data_parallel(trainer)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert check_data_parallel(trainer)["num_processes"] == 1


DEMO = CONFIGS / "demo"


@pytest.mark.parametrize("pipeline_file", sorted(p.name for p in DEMO.glob("*.yaml")
                                                 if "stages:" in p.read_text()))
def test_demo_pipelines_load_and_their_stage_configs_parse(pipeline_file, tmp_path):
    import importlib

    from align.config import parse_config
    from align.pipeline import TRAINING_KINDS, load_pipeline, resolve, variables

    p = load_pipeline(DEMO / pipeline_file, out=tmp_path / "run")
    var = variables(p)
    trained = [s for s in p.stages if s.kind in TRAINING_KINDS]
    assert trained
    for st in trained:
        module, cls_name, _ = TRAINING_KINDS[st.kind]
        cls = getattr(importlib.import_module(module), cls_name)
        argv = ["--config", resolve(st.config, var)] if st.config else []
        for k, v in resolve(st.args, var).items():
            argv += [f"--{k}", *([str(x) for x in v] if isinstance(v, list) else [str(v)])]
        cfg = parse_config(cls, argv + ["--output_dir", str(tmp_path / st.name)], st.kind)
        assert cfg.output_dir == str(tmp_path / st.name)


def test_iterative_pipeline_chains_three_rounds():
    from align.pipeline import load_pipeline

    p = load_pipeline(DEMO / "iterative.yaml")
    dpo = [s for s in p.stages if s.kind == "dpo"]
    assert [s.name for s in dpo] == ["iter_r1_dpo", "iter_r2_dpo", "iter_r3_dpo"]
    assert [s.args["model_name_or_path"] for s in dpo] == ["{sft}/model", "{iter_r1_dpo}/model", "{iter_r2_dpo}/model"]


def test_iterative_pipeline_reuses_the_demo_stages_unchanged():
    """scripts/iterative_dpo.sh relies on --resume finding the demo's stages up to date: same args."""
    from align.pipeline import load_pipeline

    demo = {s.name: s for s in load_pipeline(DEMO / "pipeline.yaml").stages}
    for st in load_pipeline(DEMO / "iterative.yaml").stages:
        if st.name in demo:
            assert (st.kind, st.args, st.config) == (demo[st.name].kind, demo[st.name].args, demo[st.name].config)
