"""Multi-process runs (accelerate launch, DeepSpeed ZeRO, DDP): the CPU/gloo set-up and the checks that catch
a run that is silently not data parallel.

On a machine without CUDA:
- the ranks must talk over gloo. accelerate picks no backend there, and then either DeepSpeed's batch
  arithmetic fails or, worse, every rank believes it is rank 0 and trains on all the data. halign's stage
  configs set `ddp_backend: gloo` (align/config.py `cpu_defaults`), and `check_data_parallel` refuses to
  train when accelerate's process count differs from the torch.distributed world size.
- DeepSpeed JIT-compiles its shared-memory all-reduce op (`deepspeed_shm_comm`, ~60 s with g++) at every
  comm init unless it is already cached in $TORCH_EXTENSIONS_DIR. It only speeds up CPU collectives, which
  matter for correctness here, not speed, so halign marks it unavailable before DeepSpeed starts and the
  collectives go through gloo. Set HALIGN_DS_SHM_COMM=1 to keep it (e.g. when it is prebuilt with
  `DS_BUILD_SHM_COMM=1 pip install deepspeed`). The other JIT ops stay out of the way by configuration:
  the shipped DeepSpeed JSONs have no "optimizer" section, so the Trainer's torch AdamW is used (no
  fused_adam); only zero3_offload needs DeepSpeed's cpu_adam, compiled once (~3 min on 2 cores) and cached.
"""
from __future__ import annotations

import os
import sys

from reward.files import InputError


def disable_shm_comm_without_cuda() -> bool:
    """Mark DeepSpeed's shm_comm op incompatible on CPU-only machines (before any comm init). True if done."""
    import importlib.util

    if os.environ.get("HALIGN_DS_SHM_COMM") == "1" or importlib.util.find_spec("deepspeed") is None:
        return False
    import torch
    if torch.cuda.is_available():
        return False
    # Only when a launcher started several ranks: DeepSpeed reads this dict in build_shm_op at comm init,
    # and computing it probes every op builder (seconds), which single-process runs need not pay.
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true":
        return False
    import deepspeed.ops
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return True


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def check_data_parallel(trainer) -> dict:
    """Refuse a run whose ranks do not split the data; return {num_processes, world_size, deepspeed}."""
    import torch

    n_proc, n_world = trainer.accelerator.num_processes, world_size()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if n_proc != n_world or n_proc != launched:
        raise InputError(f"accelerate sees {n_proc} process(es) but {launched} were launched "
                         f"(torch.distributed world size {n_world}): every rank would train on all the data",
                         fix="on a machine without CUDA keep ddp_backend: gloo (halign's default there) and "
                             "launch with a shipped configs/accelerate/*.yaml")
    if torch.cuda.is_available() and n_proc < torch.cuda.device_count() and trainer.accelerator.is_main_process:
        print(f"[halign] note: training on {n_proc} process(es) while {torch.cuda.device_count()} GPUs are "
              f"visible (accelerate launch --num_processes {torch.cuda.device_count()} uses them all)",
              file=sys.stderr)
    ds = trainer.accelerator.state.deepspeed_plugin
    return {"num_processes": n_proc, "world_size": n_world,
            "deepspeed_zero_stage": ds.zero_stage if ds is not None else None}


# DeepSpeed's documented top-level config keys. DeepSpeed ignores an unknown top-level key without a word,
# so a misspelled "zero_optimisation" silently trains at ZeRO stage 0: halign checks the spelling itself.
DEEPSPEED_TOP_LEVEL_KEYS = frozenset({
    "train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "optimizer", "scheduler",
    "fp16", "bf16", "amp", "torch_autocast", "gradient_clipping", "prescale_gradients", "gradient_predivide_factor",
    "communication_data_type", "seq_parallel_communication_data_type", "zero_optimization",
    "zero_allow_untested_optimizer", "zero_force_ds_cpu_optimizer", "steps_per_print", "wall_clock_breakdown",
    "dump_state", "memory_breakdown", "activation_checkpointing", "flops_profiler", "tensorboard", "wandb",
    "csv_monitor", "comet", "comms_logger", "sparse_attention", "aio", "nvme", "elasticity", "autotuning",
    "data_efficiency", "curriculum_learning", "compression_training", "checkpoint", "data_types", "pipeline",
    "pld", "eigenvalue", "quantize_training", "disable_allgather", "dataloader_drop_last", "tensor_parallel",
    "hybrid_engine", "sequence_parallel_size", "use_data_before_expert_parallelism", "graph_harvesting",
    "compile", "timers", "weight_quantization", "zero_enabled", "gradient_accumulation_dtype", "monitor_config",
    "nebula", "sparse_gradients", "load_universal", "use_node_local_storage", "ds_pipe_replicated",
})


def deepspeed_config_problems(config: dict, source=None) -> list[str]:
    """Spelling problems at the top level of a DeepSpeed config (the nested ones DeepSpeed reports itself)."""
    import difflib

    problems = []
    for key in config:
        if key not in DEEPSPEED_TOP_LEVEL_KEYS:
            close = difflib.get_close_matches(key, DEEPSPEED_TOP_LEVEL_KEYS, n=1)
            problems.append(f"unknown top-level key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    zero = config.get("zero_optimization")
    if zero is not None and not isinstance(zero, dict):
        problems.append("zero_optimization must be a mapping with a 'stage'")
    elif zero is not None and "stage" not in zero:
        problems.append("zero_optimization has no 'stage' (DeepSpeed would use stage 0)")
    return problems


def check_deepspeed_config_file(path) -> dict:
    """Load a DeepSpeed JSON and refuse top-level spelling mistakes with a readable error."""
    import json
    from pathlib import Path

    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read the DeepSpeed config ({e})", file=path) from None
    problems = deepspeed_config_problems(config)
    if problems:
        raise InputError("; ".join(problems), file=path,
                         fix="fix the key (DeepSpeed ignores unknown top-level keys silently)")
    return config
