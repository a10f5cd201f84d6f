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
