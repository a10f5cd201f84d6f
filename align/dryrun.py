"""`halign sft|dpo --config FILE --dry-run`: what would train, and whether it fits, without any weights.

The model is built on the meta device from its config.json alone (the checkpoint folder's, else the one
shipped beside the stage YAML, e.g. configs/qwen2-vl-7b/config.json, else the local hub cache), frozen
and LoRA-wrapped exactly as the stage would, and reported per part (vision tower, projector, language
model; trainable vs frozen). Memory per GPU comes from DeepSpeed's own model-state estimators
(`estimate_zero2_model_states_mem_needs`, `estimate_zero3_model_states_mem_needs`) for the chosen ZeRO
stage, GPU count and offload:
- "all parameters trained": DeepSpeed's estimate as it stands (it assumes every parameter is trained);
- "this config": DeepSpeed's estimate for the trainable parameters, plus the 16-bit copies of the frozen
  ones (sharded over the GPUs under ZeRO-3, whole on each GPU otherwise; on the CPU with parameter
  offload) and, for DPO with a live reference model (full fine-tuning without precompute), a second
  16-bit copy of the whole model. Activations are not included: they grow with batch size, sequence
  length and image tokens.

Options (after `--dry-run`; also read from `--accelerate_config FILE`, as used with accelerate launch):
    --zero_stage 0|2|3   --num_gpus N   --num_nodes N   --offload none|optimizer|all
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from reward.files import InputError

GB = 1024 ** 3
DRY_RUN_OPTIONS = {"--zero_stage": int, "--num_gpus": int, "--num_nodes": int, "--offload": str,
                   "--accelerate_config": str}


def split_dry_run_args(argv: list[str]) -> tuple[list[str], dict | None]:
    """(stage argv, dry-run options or None when --dry-run is absent)."""
    if "--dry-run" not in argv and "--dry_run" not in argv:
        return argv, None
    rest, options, i = [], {}, 0
    while i < len(argv):
        a = argv[i]
        key = a.split("=", 1)[0].replace("-", "_").replace("__", "--", 1)
        if a in ("--dry-run", "--dry_run"):
            i += 1
            continue
        if key in DRY_RUN_OPTIONS:
            value = a.split("=", 1)[1] if "=" in a else (argv[i + 1] if i + 1 < len(argv) else None)
            if value is None:
                raise InputError(f"{a} needs a value")
            try:
                options[key[2:]] = DRY_RUN_OPTIONS[key](value)
            except ValueError:
                raise InputError(f"bad value {value!r} for {key}") from None
            i += 1 if "=" in a else 2
            continue
        rest.append(a)
        i += 1
    return rest, options


def hardware_from_options(options: dict) -> dict:
    """ZeRO stage, GPUs, nodes and offload from the options, an accelerate YAML or the defaults."""
    hw = {"zero_stage": 3, "num_gpus": 8, "num_nodes": 1, "offload": "none"}
    if options.get("accelerate_config"):
        hw.update(_from_accelerate_config(options["accelerate_config"]))
    hw.update({k: v for k, v in options.items() if k in hw})
    if hw["zero_stage"] not in (0, 1, 2, 3):
        raise InputError(f"zero_stage {hw['zero_stage']} is not a ZeRO stage", fix="use 0, 2 or 3")
    if hw["offload"] not in ("none", "optimizer", "all"):
        raise InputError(f"offload {hw['offload']!r}", fix="use none, optimizer or all")
    if hw["offload"] == "all" and hw["zero_stage"] != 3:
        raise InputError("parameter offload needs ZeRO-3", fix="use --offload optimizer, or --zero_stage 3")
    if hw["num_gpus"] < 1 or hw["num_nodes"] < 1:
        raise InputError("num_gpus and num_nodes must be at least 1")
    return hw


def _from_accelerate_config(path: str) -> dict:
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(path)
    n_proc = max(int(cfg.num_processes or 1), 1)
    out = {"num_nodes": max(int(cfg.num_machines or 1), 1)}
    out["num_gpus"] = max(n_proc // out["num_nodes"], 1)
    ds = cfg.deepspeed_config or {}
    if str(cfg.distributed_type).endswith("DEEPSPEED"):
        zero = ds.get("zero_stage")
        offload = ds.get("offload_param_device") not in (None, "none"), \
            ds.get("offload_optimizer_device") not in (None, "none")
        if ds.get("deepspeed_config_file"):
            ds_file = Path(ds["deepspeed_config_file"])
            if not ds_file.is_absolute() and not ds_file.is_file():
                ds_file = Path(path).resolve().parents[2] / ds_file   # relative to the repo root
            zopt = json.loads(ds_file.read_text()).get("zero_optimization", {})
            zero = zopt.get("stage", 0)
            offload = (zopt.get("offload_param", {}).get("device", "none") != "none",
                       zopt.get("offload_optimizer", {}).get("device", "none") != "none")
        out["zero_stage"] = int(zero or 0)
        out["offload"] = "all" if offload[0] else "optimizer" if offload[1] else "none"
    else:
        out["zero_stage"] = 0
    return out


def find_model_config(cfg) -> Path:
    """config.json of the checkpoint folder, else the one beside the stage YAML."""
    local = Path(cfg.model_name_or_path) / "config.json" if cfg.model_name_or_path else None
    if local is not None and local.is_file():
        return local
    if getattr(cfg, "config_path", None):
        beside = Path(cfg.config_path).parent / "config.json"
        if beside.is_file():
            return beside
    try:
        from transformers.utils import cached_file
        found = cached_file(cfg.model_name_or_path, "config.json", local_files_only=True,
                            _raise_exceptions_for_missing_entries=False)
        if found:
            return Path(found)
    except (OSError, ValueError):
        pass
    raise InputError("no config.json for the dry run", file=getattr(cfg, "config_path", None),
                     fix="point model_name_or_path at a folder with config.json, or put the model's "
                         "config.json beside the stage YAML (configs/<family>/config.json)")


def build_meta_model(config_file: Path, cfg):
    """The model on the meta device, frozen and LoRA-wrapped as the stage would do it."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from align.modeling import apply_freezing, lora_config

    config = AutoConfig.from_pretrained(str(config_file.parent), trust_remote_code=cfg.trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config, trust_remote_code=cfg.trust_remote_code)
    apply_freezing(model, cfg)
    if cfg.use_peft:
        from peft import get_peft_model
        model = get_peft_model(model, lora_config(model, cfg))
    return model


def largest_layer_params(model) -> int:
    return max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)


def memory_estimate(total: int, trainable: int, largest: int, hw: dict, reference_copy: bool) -> dict:
    """Bytes per GPU and per node (CPU) of model states: DeepSpeed's formulas, see the module docstring."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    gpus, nodes, stage, offload = hw["num_gpus"], hw["num_nodes"], hw["zero_stage"], hw["offload"]

    def deepspeed(n_params: int) -> tuple[int, int]:
        """(cpu, gpu) bytes DeepSpeed estimates for training n_params parameters."""
        if n_params == 0:
            return 0, 0
        if stage == 3:
            cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
                n_params, min(largest, n_params), gpus, nodes, cpu_offload=offload != "none",
                cpu_offload_params=offload == "all", zero_init=True)
            return cpu, gpu
        if stage == 2:
            return estimate_zero2_model_states_mem_needs(n_params, gpus, nodes, cpu_offload=offload != "none")
        # no ZeRO (DDP): every rank holds 16-bit weights, 16-bit grads and fp32 Adam states (2 + 2 + 12 bytes)
        return 0, 16 * n_params

    frozen = total - trainable
    shards = gpus * nodes if stage == 3 else 1
    frozen_gpu = 0 if (stage == 3 and offload == "all") else 2 * frozen // shards
    reference_gpu = (0 if (stage == 3 and offload == "all") else 2 * total // shards) if reference_copy else 0
    all_cpu, all_gpu = deepspeed(total)
    train_cpu, train_gpu = deepspeed(trainable)
    return {"all_trained_gpu": all_gpu, "all_trained_cpu": all_cpu, "trainable_gpu": train_gpu,
            "trainable_cpu": train_cpu, "frozen_gpu": frozen_gpu, "reference_gpu": reference_gpu,
            "config_gpu": train_gpu + frozen_gpu + reference_gpu}


def dry_run(cfg, stage: str, options: dict) -> dict:
    from align.modeling import format_report, parameter_report

    hw = hardware_from_options(options)
    config_file = find_model_config(cfg)
    model = build_meta_model(config_file, cfg)
    report = parameter_report(model)
    total = sum(r["total"] for r in report.values())
    trainable = sum(r["trainable"] for r in report.values())
    reference_copy = stage == "dpo" and not cfg.use_peft and not getattr(cfg, "precompute_ref_log_probs", False)
    mem = memory_estimate(total, trainable, largest_layer_params(model), hw, reference_copy)
    base = model.get_base_model() if cfg.use_peft else model
    lines = [
        f"[dry-run] {stage}: {type(base).__name__} from {config_file} (meta device, no weights read)",
        "parameters per part:", format_report(report),
        f"memory per GPU, ZeRO-{hw['zero_stage']} on {hw['num_gpus']} GPU(s) x {hw['num_nodes']} node(s), "
        f"offload: {hw['offload']} (model states only; activations come on top):",
        f"  DeepSpeed's estimate, all {total / 1e9:.2f}B parameters trained: {mem['all_trained_gpu'] / GB:7.2f} GB"
        f" per GPU, {mem['all_trained_cpu'] / GB:.1f} GB CPU per node",
        f"  this config: trainable {trainable / 1e6:.1f}M (DeepSpeed's estimate) {mem['trainable_gpu'] / GB:7.2f} GB",
        f"             + frozen 16-bit weights                {mem['frozen_gpu'] / GB:7.2f} GB",
        f"             + DPO reference copy (16-bit)          {mem['reference_gpu'] / GB:7.2f} GB" +
        ("" if reference_copy else "  (none: " + ("LoRA disables adapters" if cfg.use_peft else
                                                  "precomputed" if stage == "dpo" else "not DPO") + ")"),
        f"             = {mem['config_gpu'] / GB:.2f} GB per GPU",
    ]
    print("\n".join(lines), file=sys.stdout)
    return {"stage": stage, "model_config": str(config_file), "model_class": type(base).__name__,
            "parameters": report, "total": total, "trainable": trainable, "hardware": hw,
            "reference_copy": reference_copy, "memory_bytes": mem}
