"""Stage configs: TRL's own config dataclasses extended with halign's fields, read from YAML.

`halign sft --config configs/demo/sft.yaml --learning_rate 1e-4` parses the YAML into the stage's
dataclass (keys must be fields: an unknown key is an error that names it) and then applies command-line
overrides, exactly like TRL's own scripts (TrlParser).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar

import yaml

from reward.files import InputError

T = TypeVar("T")


@dataclass
class ModelFields:
    """What to load and what to train. Shared by every training stage."""
    model_name_or_path: str = field(default="", metadata={"help": "hub name or local checkpoint folder"})
    trust_remote_code: bool = field(default=False, metadata={"help": "run code shipped with the checkpoint"})
    model_dtype: str = field(default="auto", metadata={"help": "auto | float32 | bfloat16 | float16"})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "keep the vision encoder frozen"})
    freeze_projector: bool = field(default=False, metadata={"help": "keep the multimodal projector frozen"})
    freeze_language_model: bool = field(default=False,
                                        metadata={"help": "keep the language model frozen (not with LoRA)"})
    use_peft: bool = field(default=False, metadata={"help": "train LoRA adapters on the language model"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = field(
        default=r".*(language_model|text_model).*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        metadata={"help": "regex over module names; covers LLaVA/Qwen 'language_model' and Idefics 'text_model'"})
    lora_modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "modules trained in full next to LoRA, e.g. multi_modal_projector"})


@dataclass
class DataFields:
    """Where the stage's data lives. Relative image paths resolve against `images_dir` (or the file's folder)."""
    dataset: str = field(default="", metadata={"help": "JSONL of training rows (see DESIGN.md)"})
    images_dir: str | None = field(default=None, metadata={"help": "folder that image paths are relative to"})
    eval_dataset: str | None = None
    max_samples: int | None = field(default=None, metadata={"help": "use only the first N rows"})
    check_image_tokens: bool = field(default=True,
                                     metadata={"help": "refuse rows whose image tokens max_length would cut"})
    drop_long_samples: bool = field(default=False,
                                    metadata={"help": "drop (and count) such rows instead of refusing them"})
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})


def cpu_defaults(cfg) -> None:
    """Call first thing in a stage config's __post_init__, before TRL's and transformers' validation.

    TRL's defaults assume a GPU: bf16 on, gradient checkpointing on. On a CPU both hurt (checkpointing
    makes tiny-model steps ~40x slower; transformers refuses bf16 without use_cpu), so a CPU run gets fp32,
    no checkpointing and use_cpu unless the config says otherwise about bf16."""
    import torch

    if not torch.cuda.is_available():
        if getattr(cfg, "bf16", None) is None:
            cfg.bf16 = False
        if hasattr(cfg, "gradient_checkpointing"):
            cfg.gradient_checkpointing = False
        if hasattr(cfg, "activation_checkpointing"):   # transformers 5's name; the old one is an alias
            cfg.activation_checkpointing = False
        if getattr(cfg, "ddp_backend", None) is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # several ranks on CPU need gloo named explicitly (align/distributed.py explains the failure);
            # a single process must not name one (accelerate then expects a process group)
            cfg.ddp_backend = "gloo"
        if os.environ.get("ACCELERATE_USE_DEEPSPEED") != "true":
            cfg.use_cpu = True   # DeepSpeed's CPU accelerator runs it on the CPU by itself


def parse_config(cls: type[T], argv: list[str], prog: str) -> T:
    """Parse `--config FILE [--field value ...]` into `cls` (a TRL config dataclass subclass)."""
    from trl import TrlParser

    from align.distributed import disable_shm_comm_without_cuda

    disable_shm_comm_without_cuda()   # before TrainingArguments starts DeepSpeed's comm
    ds_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if ds_file and ds_file.endswith(".json"):   # launched with a DeepSpeed accelerate config
        from align.distributed import check_deepspeed_config_file
        check_deepspeed_config_file(ds_file)
    argv = list(argv)
    config_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise InputError("--config needs a file", fix=f"run `halign {prog} --config FILE`")
        config_path = Path(argv[i + 1])
        check_config_file(config_path, cls)
    elif not any(a in ("-h", "--help") for a in argv):
        raise InputError(f"`halign {prog}` needs --config FILE",
                         fix=f"start from a shipped config, e.g. configs/demo/{prog}.yaml")
    parser = TrlParser([cls], prog=f"halign {prog}")
    parser.description = (cls.__doc__ or "").strip()
    try:
        (cfg,) = parser.parse_args_and_config(args=argv)
    except ValueError as e:   # TrlParser's unknown-key error, or a bad value in a TRL __post_init__
        raise InputError(str(e), file=config_path, fix="see --help for the fields") from None
    except InputError as e:   # a halign check in the stage config's __post_init__
        if e.file is None:
            e.file = config_path
        raise
    cfg.config_path = str(config_path) if config_path else None
    return cfg


def check_config_file(path: Path, cls) -> None:
    """Readable errors for the YAML file before TRL sees it: missing file, bad syntax, unknown keys."""
    if not path.is_file():
        raise InputError("config file not found", file=path, fix="check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else None
        raise InputError(f"malformed YAML ({getattr(e, 'problem', e)})", file=path, record=where,
                         fix="fix the YAML syntax") from None
    if data is None:
        raise InputError("config file is empty", file=path, fix="give at least model_name_or_path")
    if not isinstance(data, dict):
        raise InputError("config must be a YAML mapping of field: value", file=path)
    known = {f.name for f in fields(cls)} | {"env"}
    unknown = [k for k in data if k not in known]
    if unknown:
        import difflib

        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, known, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InputError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}", file=path,
                         fix=f"remove or rename it; `halign <stage> --help` lists the fields of {cls.__name__}")


def print_config(cfg, keys: list[str]) -> None:
    print(", ".join(f"{k}={getattr(cfg, k)}" for k in keys if hasattr(cfg, k)), file=sys.stderr)
