"""Export an aligned checkpoint: `halign export --checkpoint DIR --out DIR [--merge-lora]`.

Writes safetensors weights (LoRA merged into the base when asked), the processor with its tokenizer and
chat template, the generation config, and a model card (README.md) with the base model, the training
lineage read from the run's stage manifests (stages, data, key hyperparameters) and the eval table. The
folder is written under a temporary name and renamed, so an interrupted export leaves nothing behind;
it reloads with `AutoModelForImageTextToText` / `AutoProcessor`.
"""
from __future__ import annotations

import json
from pathlib import Path

from reward.files import InputError, atomic_path, read_json

KEY_HYPERPARAMETERS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                       "beta", "loss_type", "use_peft", "lora_r", "freeze_vision_tower", "kl_coef",
                       "num_generations", "mode")


def lineage(checkpoint: Path, max_depth: int = 10) -> list[dict]:
    """Follow model_name_or_path back through stage.json manifests: newest stage first."""
    chain, path = [], checkpoint.resolve()
    for _ in range(max_depth):
        manifest = path.parent / "stage.json"
        if not manifest.is_file():
            break
        m = read_json(manifest)
        ident = m.get("identity", {})
        args = dict(ident.get("args", {}))
        if ident.get("config_text"):
            import yaml
            args = {**(yaml.safe_load(ident["config_text"]) or {}), **args}
        chain.append({"stage": m.get("stage"), "kind": ident.get("kind"),
                      "data": args.get("dataset") or args.get("annotations"),
                      "hyperparameters": {k: args[k] for k in KEY_HYPERPARAMETERS if k in args},
                      "metrics": {k: v for k, v in (m.get("metrics") or {}).items()
                                  if isinstance(v, (int, float, str)) and k != "model"},
                      "wall_time_s": m.get("wall_time_s")})
        parent = args.get("model_name_or_path")
        if not parent or not Path(parent).exists():
            if parent:
                chain.append({"stage": "base", "kind": "base model", "data": None, "hyperparameters": {},
                              "metrics": {}, "name": parent})
            break
        path = Path(parent).resolve()
    return chain


def model_card(checkpoint: Path, base: str, chain: list[dict], report: dict | None, merged: bool) -> str:
    lines = ["---", "library_name: transformers", "pipeline_tag: image-text-to-text", "tags: [halign, dpo, "
             "hallucination]", "---", "", f"# {checkpoint.parent.name if checkpoint.name == 'model' else checkpoint.name}"
             " (exported by halign)", "",
             f"Base model: `{base}`. {'LoRA adapters merged into the weights.' if merged else ''}", "",
             "Load it like any checkpoint:", "", "```python",
             "from transformers import AutoModelForImageTextToText, AutoProcessor",
             "model = AutoModelForImageTextToText.from_pretrained(PATH)",
             "processor = AutoProcessor.from_pretrained(PATH)", "```", "", "## Training lineage", ""]
    if chain:
        lines += ["| stage | kind | data | key hyperparameters | wall s |", "|---|---|---|---|---|"]
        for c in reversed(chain):
            hp = ", ".join(f"{k}={v}" for k, v in c["hyperparameters"].items())
            lines.append(f"| {c['stage']} | {c['kind']} | {c.get('data') or c.get('name') or ''} | {hp} | "
                         f"{c.get('wall_time_s') or ''} |")
    else:
        lines.append("No stage manifests found next to the checkpoint.")
    if report and report.get("results"):
        from align.report import format_table, metric_table

        header, rows = metric_table(report["results"])
        lines += ["", "## Evaluation (rates in %)", "", format_table(header, rows, markdown=True)]
    return "\n".join(lines) + "\n"


def export_checkpoint(checkpoint: str | Path, out: str | Path, merge_lora: bool = True,
                      report: str | Path | None = None, trust_remote_code: bool = False) -> dict:
    from align.modeling import WEIGHT_FILES, check_checkpoint_dir, load_model, load_processor

    checkpoint, out = Path(checkpoint), Path(out)
    check_checkpoint_dir(str(checkpoint))
    is_adapter = (checkpoint / "adapter_config.json").is_file()
    if not is_adapter and not any((checkpoint / w).is_file() for w in WEIGHT_FILES):
        raise InputError("no weights in the checkpoint folder", file=checkpoint)
    model = load_model(str(checkpoint), trust_remote_code)
    if is_adapter and merge_lora:
        model = model.merge_and_unload()
    elif is_adapter:
        raise InputError("the checkpoint holds LoRA adapters", file=checkpoint,
                         fix="pass --merge-lora to export merged weights (or use the adapter folder as it is)")
    processor = load_processor(str(checkpoint), trust_remote_code)
    report_data = read_json(report) if report else None
    base = json.loads((checkpoint / "adapter_config.json").read_text())["base_model_name_or_path"] \
        if is_adapter else getattr(model.config, "_name_or_path", str(checkpoint))
    chain = lineage(checkpoint)
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        (tmp / "README.md").write_text(model_card(checkpoint, base, chain, report_data, is_adapter and merge_lora))
        (tmp / "halign_lineage.json").write_text(json.dumps(chain, indent=2))
    return {"out": str(out), "merged_lora": bool(is_adapter and merge_lora), "stages": len(chain)}


def export_command(checkpoint: Path, out: Path, merge_lora: bool = False, report: Path | None = None,
                   trust_remote_code: bool = False) -> int:
    """Export a checkpoint: safetensors weights, processor, chat template, generation config, model card.

    Args:
        checkpoint: checkpoint folder (a stage's model/ folder, full weights or LoRA adapters)
        out: export folder (written under a temporary name, then renamed)
        merge_lora: merge LoRA adapters into the base weights
        report: report.json of `halign eval run` / `halign demo` to put the eval table in the model card
        trust_remote_code: allow code shipped with the checkpoint
    """
    info = export_checkpoint(checkpoint, out, merge_lora, report, trust_remote_code)
    print(f"exported {checkpoint} -> {info['out']} (LoRA merged: {info['merged_lora']}, "
          f"{info['stages']} stages of lineage)")
    return 0
