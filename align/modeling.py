"""Loading VLM checkpoints and choosing what trains: one place for every family.

Families name their parts differently (LLaVA/PaliGemma: vision_tower + multi_modal_projector +
language_model; Qwen2/2.5-VL: visual (+ visual.merger) + language_model; Idefics3/SmolVLM: vision_model +
connector + text_model). `part_of` maps a parameter name to "vision", "projector" or "language" so that
freezing, LoRA targets and the parameter report work the same for all of them.
"""
from __future__ import annotations

import re
import sys
from collections import OrderedDict
from pathlib import Path

from reward.files import InputError

PROJECTOR_PATTERNS = ("multi_modal_projector", "connector", "visual.merger", "mm_projector")
VISION_PATTERNS = ("vision_tower", "vision_model", "visual.", "vision_encoder")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                "pytorch_model.bin", "pytorch_model.bin.index.json")


def part_of(param_name: str) -> str:
    name = param_name.replace("base_model.model.", "")
    if any(p in name for p in PROJECTOR_PATTERNS):
        return "projector"
    if any(p in name for p in VISION_PATTERNS):
        return "vision"
    return "language"


def check_checkpoint_dir(path: str) -> None:
    """A local folder must hold a config and weights; hub names pass through to from_pretrained."""
    p = Path(path)
    if not p.exists():
        if path.startswith((".", "/")) or path.count("/") > 1 or path.endswith("/"):
            raise InputError("checkpoint folder not found", file=path, fix="check model_name_or_path")
        return   # a hub name such as "llava-hf/llava-1.5-7b-hf"
    if not p.is_dir():
        raise InputError("model_name_or_path is a file, not a checkpoint folder", file=path)
    if not (p / "config.json").is_file():
        raise InputError("no config.json in the checkpoint folder", file=path,
                         fix="point at a folder written by save_pretrained (or `halign export`)")
    if not any((p / w).is_file() for w in WEIGHT_FILES) and not list(p.glob("model-*.safetensors")):
        raise InputError("the checkpoint folder has a config but no weights", file=path,
                         fix="was the save interrupted? use the last complete checkpoint")


def load_processor(name_or_path: str, trust_remote_code: bool = False):
    from align.families import load_processor as load_family_processor

    # image-only processors for the families whose own processor needs a video processor (torchvision)
    processor = load_family_processor(name_or_path, trust_remote_code)
    if not hasattr(processor, "image_processor"):
        raise InputError("AutoProcessor returned a bare tokenizer, not a multimodal processor", file=name_or_path,
                         fix="the folder needs processor_config.json / preprocessor_config.json "
                             "(re-export it with `halign export`)")
    return processor


def load_model(name_or_path: str, trust_remote_code: bool = False, dtype: str = "auto"):
    """`AutoModelForImageTextToText.from_pretrained` with readable errors. Never unpickles: safetensors only."""
    import torch
    from transformers import AutoModelForImageTextToText

    check_checkpoint_dir(name_or_path)
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise InputError(f"unknown model_dtype {dtype!r}", fix="use auto, float32, bfloat16 or float16")
    adapter = Path(name_or_path) / "adapter_config.json"
    if adapter.is_file():
        return _load_peft_checkpoint(name_or_path, trust_remote_code, torch_dtype)
    try:
        return AutoModelForImageTextToText.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, dtype=torch_dtype, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise InputError(f"could not load the model: {str(e).splitlines()[0]}", file=name_or_path,
                         fix="check the checkpoint (safetensors weights, a supported architecture)") from None


def _load_peft_checkpoint(path: str, trust_remote_code: bool, torch_dtype):
    """A LoRA checkpoint folder: load its base model, then the adapter (unmerged, trainable off)."""
    import json

    from peft import PeftModel

    base = json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = load_model(base, trust_remote_code, "auto" if torch_dtype == "auto" else str(torch_dtype)[6:])
    return PeftModel.from_pretrained(model, path)


def check_model_processor(model, processor, where: str) -> None:
    """A model/processor mismatch otherwise surfaces mid-training as an index error or token-count error."""
    tok = getattr(processor, "tokenizer", processor)
    emb = model.get_input_embeddings().weight.shape[0]
    if len(tok) > emb:
        raise InputError(f"tokenizer has {len(tok)} tokens but the model's embedding has {emb} rows",
                         file=where, fix="load the processor saved with this model")
    image_token_id = getattr(model.config, "image_token_id", None) or getattr(model.config, "image_token_index",
                                                                              None)
    proc_image_id = getattr(processor, "image_token_id", None)
    if image_token_id is not None and proc_image_id is not None and image_token_id != proc_image_id:
        raise InputError(f"the processor's image token id {proc_image_id} differs from the model's "
                         f"{image_token_id}", file=where, fix="load the processor saved with this model")


def load_model_and_processor(cfg):
    """Model + processor for a stage config (ModelFields), checked against each other."""
    if not cfg.model_name_or_path:
        raise InputError("no model given", fix="set model_name_or_path in the config or pass "
                                               "--model_name_or_path")
    model = load_model(cfg.model_name_or_path, cfg.trust_remote_code, cfg.model_dtype)
    processor = load_processor(_processor_source(cfg.model_name_or_path), cfg.trust_remote_code)
    check_model_processor(model, processor, cfg.model_name_or_path)
    return model, processor


def _processor_source(path: str) -> str:
    adapter = Path(path) / "adapter_config.json"
    if adapter.is_file() and not (Path(path) / "processor_config.json").is_file() and \
            not (Path(path) / "preprocessor_config.json").is_file():
        import json
        return json.loads(adapter.read_text())["base_model_name_or_path"]
    return path


def apply_freezing(model, cfg) -> None:
    """Set requires_grad per part from the config (before any LoRA wrapping)."""
    frozen = {"vision": cfg.freeze_vision_tower, "projector": cfg.freeze_projector,
              "language": cfg.freeze_language_model or cfg.use_peft}
    for name, p in model.named_parameters():
        p.requires_grad_(not frozen[part_of(name)])


def projector_module_names(model) -> list[str]:
    names = OrderedDict()
    for name, _ in model.named_modules():
        for pat in PROJECTOR_PATTERNS:
            if name.endswith(pat.rstrip(".")):
                names[name.split(".")[-1] if pat != "visual.merger" else "merger"] = True
    return list(names)


def lora_config(model, cfg):
    """peft LoraConfig on the language model; the projector trains in full next to it unless frozen."""
    from peft import LoraConfig

    targets = [n for n, _ in model.named_modules() if re.fullmatch(cfg.lora_target_modules, n)]
    if not targets:
        raise InputError(f"lora_target_modules {cfg.lora_target_modules!r} matches no module of the model",
                         file=cfg.model_name_or_path, fix="adjust the regex (module names: model.named_modules())")
    to_save = list(cfg.lora_modules_to_save or [])
    if not cfg.freeze_projector and not to_save:
        to_save = projector_module_names(model)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, modules_to_save=to_save or None,
                      task_type="CAUSAL_LM")


def parameter_report(model) -> dict[str, dict[str, int]]:
    """Trainable and total parameters per part (works on meta-device and peft-wrapped models)."""
    report = {p: {"trainable": 0, "total": 0} for p in ("vision", "projector", "language")}
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:   # tied embeddings count once
            continue
        seen.add(id(p))
        part = report[part_of(name)]
        part["total"] += p.numel()
        part["trainable"] += p.numel() if p.requires_grad else 0
    return report


def format_report(report: dict) -> str:
    def h(n: int) -> str:
        return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}K"
    rows = [f"{part:<10} trainable {h(r['trainable']):>8} / {h(r['total']):>8}" for part, r in report.items()]
    total = sum(r["total"] for r in report.values())
    train = sum(r["trainable"] for r in report.values())
    rows.append(f"{'all':<10} trainable {h(train):>8} / {h(total):>8} ({100 * train / max(1, total):.1f}%)")
    return "\n".join(rows)


def print_parameter_report(model, stage: str) -> dict:
    report = parameter_report(model)
    print(f"[{stage}] parameters per part:\n" + format_report(report), file=sys.stderr)
    return report
