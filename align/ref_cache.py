"""Reference log-probs for vision DPO, computed once WITH the images and stored next to the pairs file.

TRL 1.16 refuses `precompute_ref_log_probs` for vision datasets, so VLM DPO keeps a second model (or the
LoRA-disabled policy) running a reference forward on every step. halign runs the reference forward over
the pairs once, before training, through the same collator as training (images, corrupted images for
mDPO, dense weights), and stores one value per pair and column in a small JSON file:

    <pairs dir>/ref_logps/<pairs stem>-<split>-<key>.json
    {"key": ..., "rows": N, "columns": {"ref_chosen_logps": [...], ...}, "reference": {...}, "seconds": ...}

The key hashes everything the values depend on: the pairs file's bytes, the rows kept (max_samples, length
filter), the image files (size, mtime), the reference checkpoint's files (name, size, mtime), the chat
template, max_length and the loss settings that add columns (mDPO's corrupted branch, dense gamma). A later
epoch, a resumed run or a new run with the same inputs reads the file instead of recomputing; anything
else gets a new key (old files are left in place). Then no reference model is kept during training.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from reward.files import InputError, write_json

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RefCache:
    folder: Path
    stem: str
    key: str

    def path(self, split: str) -> Path:
        return self.folder / f"{self.stem}-{split}-{self.key[:16]}.json"


def _file_identity(path: Path) -> list:
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def checkpoint_identity(name_or_path: str) -> list:
    """Weights and config files of a local checkpoint (name, size, mtime); a hub name stands for itself."""
    p = Path(name_or_path)
    if not p.is_dir():
        return [name_or_path]
    files = sorted(f for f in p.iterdir() if f.is_file() and (
        f.suffix in (".safetensors", ".bin", ".json") and not f.name.startswith(("tokenizer", "special_tokens"))))
    out = [_file_identity(f) for f in files]
    adapter = p / "adapter_config.json"
    if adapter.is_file():   # a LoRA checkpoint's reference includes its base model
        base = json.loads(adapter.read_text()).get("base_model_name_or_path", "")
        out.append(checkpoint_identity(base))
    return out


def reference_key(*, pairs_file, kept_rows: list[int], image_paths, model_name_or_path: str, chat_template,
                  settings: dict) -> str:
    h = hashlib.sha256()
    h.update(Path(pairs_file).read_bytes())
    parts = {"version": FORMAT_VERSION, "rows": kept_rows, "model": checkpoint_identity(model_name_or_path),
             "images": [_file_identity(Path(p)) for p in image_paths], "template": chat_template or "",
             "settings": settings}
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()


def default_cache(pairs_file, key: str, folder: str | None = None) -> RefCache:
    pairs_file = Path(pairs_file)
    return RefCache(Path(folder) if folder else pairs_file.parent / "ref_logps", pairs_file.stem, key)


def _load(path: Path, key: str, rows: int, columns: list[str]) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("key") != key or data.get("rows") != rows or not all(c in data.get("columns", {}) for c in columns):
        return None
    return {c: data["columns"][c] for c in columns}


def precompute_reference(trainer, dataset, split: str, batch_size: int, cache: RefCache | None):
    """Add the reference columns to `dataset`, from the cache file or by one pass of reference forwards."""
    import torch
    from accelerate.utils import broadcast_object_list
    from torch.utils.data import DataLoader

    columns = list(trainer._ref_columns)
    path = cache.path(split) if cache is not None else None
    found = [_load(path, cache.key, len(dataset), columns) if path is not None else None]
    broadcast_object_list(found, from_process=0)   # every rank takes rank 0's decision
    values, seconds = found[0], 0.0
    if values is not None:
        print(f"[dpo] reference log-probs for {split} read from {path}", file=sys.stderr)
    else:
        t0 = time.perf_counter()
        collator = replace(trainer.data_collator, ref_columns=(), compact_rehearsal=False)   # TRL's rows
        loader = trainer.accelerator.prepare(DataLoader(dataset, batch_size=batch_size, collate_fn=collator,
                                                        shuffle=False, num_workers=trainer.args.dataloader_num_workers))
        model = _reference_model(trainer)
        chunks = {c: [] for c in columns}
        for batch in loader:
            out = trainer.reference_values(batch, model)
            for c in columns:
                chunks[c].append(trainer.accelerator.gather_for_metrics(out[c].float()).cpu())
        values = {c: torch.cat(chunks[c]).tolist() for c in columns}
        seconds = time.perf_counter() - t0
        if path is not None and trainer.accelerator.is_main_process:
            write_json(path, {"key": cache.key, "rows": len(dataset), "split": split, "columns": values,
                              "seconds": round(seconds, 3), "format": FORMAT_VERSION})
            print(f"[dpo] reference log-probs for {split}: {len(dataset)} pairs in {seconds:.1f}s -> {path}",
                  file=sys.stderr)
        trainer.accelerator.wait_for_everyone()
    trainer.ref_precompute_seconds = getattr(trainer, "ref_precompute_seconds", 0.0) + seconds
    for c in columns:
        if len(values[c]) != len(dataset):
            raise InputError(f"reference column {c} has {len(values[c])} values for {len(dataset)} pairs",
                             file=path, fix="delete the file; it is recomputed on the next run")
        if c in dataset.column_names:
            dataset = dataset.remove_columns(c)
        dataset = dataset.add_column(c, values[c])
    return dataset


def _reference_model(trainer):
    """The model the reference forward runs on: the frozen copy, else the policy before any step (with
    LoRA, its adapters are disabled in reference_values); under DeepSpeed, an inference engine around it,
    built once and kept for later passes (as TRL does for its own precompute)."""
    if trainer.ref_model is None and trainer.is_deepspeed_enabled:
        if trainer._precompute_engine is None:
            from trl.models import prepare_deepspeed
            trainer._precompute_engine = prepare_deepspeed(trainer.model, trainer.accelerator)
        return trainer._precompute_engine
    if trainer.ref_model is None:
        # before `train`, the policy sits on the CPU until Trainer moves it; run where the batches are
        trainer.model.to(trainer.accelerator.device)
    return trainer.ref_model or trainer.model

