"""Reference log-probs for vision DPO: precomputed with the images (halign) vs TRL's live reference.

    OMP_NUM_THREADS=1 python scripts/bench_ref_precompute.py [--pairs 96] [--epochs 2] [--hidden 512]

Same tiny LLaVA (tests/tiny_models.py, language model widened by --hidden/--layers), same pairs (the
shape world's pairs of tests/tiny_data.py repeated to --pairs), same seed and batches. Each setting runs
in its own process, so "peak RSS" is that process's high-water mark (ru_maxrss), and "model RSS" is the
part of it above the process's RSS just before the trainer is built (imports, data and tokenizer are common
to all settings). Settings:
  live/full        TRL's DPOTrainer as is: full fine-tuning, a reference model copy, a reference forward
                   every step
  precompute/full  halign: one reference pass over the pairs before training (its time shown apart),
                   no reference model in memory, no reference forward while training
  cached/full      the same run again: the stored reference values are read back (no pass at all)
  live/lora        TRL with LoRA: the reference is the same model with the adapters disabled (a second
                   forward every step, no copy)
  precompute/lora  halign with LoRA: the reference (the base model: adapters disabled) is the one the
                   full run stored, so it is read back (the cache key names pairs, images, checkpoint files,
                   template, max_length and loss settings, not LoRA)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = [("live", "full"), ("precompute", "full"), ("cached", "full"), ("live", "lora"),
            ("precompute", "lora")]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def prepare(root: Path, args) -> dict:
    sys.path.insert(0, str(REPO))
    from tests.tiny_data import build_world
    from tests.tiny_models import build_tiny

    world = build_world(root / "world")
    lines = world["pairs"].read_text().splitlines()
    big = world["pairs"].with_name("pairs_bench.jsonl")
    rows = []
    for i in range(args.pairs):
        rec = json.loads(lines[i % len(lines)])
        rec["image_id"] = f"{rec['image_id']}-{i}"
        rows.append(json.dumps(rec))
    big.write_text("\n".join(rows) + "\n")
    size = dict(hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_hidden_layers=args.layers,
                num_attention_heads=8, num_key_value_heads=8)
    return {"root": str(root), "pairs": str(big), "images": str(world["root"]), "model": str(build_tiny("llava-clip", root / "ckpt", text_size=size)),
            "ref_dir": str(root / "ref")}


def child(mode: str, peft: str, paths: dict, args) -> dict:
    sys.path.insert(0, str(REPO))
    from transformers import TrainerCallback

    from align.config import parse_config
    from align.dpo import DPOStageConfig, load_dpo_dataset, reference_cache
    from align.dpo_variants import HallucinationDPOTrainer
    from align.sft import prepare_model

    out = Path(paths["root"]) / f"run-{mode}-{peft}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "c.yaml").write_text("report_to: none\n")
    argv = ["--config", str(out / "c.yaml"), "--model_name_or_path", paths["model"], "--dataset", paths["pairs"],
            "--images_dir", paths["images"],
            "--output_dir", str(out), "--num_train_epochs", str(args.epochs), "--per_device_train_batch_size",
            str(args.batch), "--save_strategy", "no", "--logging_steps", "1000", "--max_length", "512",
            "--use_peft", "true" if peft == "lora" else "false", "--ref_logps_dir", paths["ref_dir"],
            "--precompute_ref_log_probs", "false" if mode == "live" else "true", "--learning_rate", "1e-4"]
    cfg = parse_config(DPOStageConfig, argv, "dpo")
    model, processor, peft_config = prepare_model(cfg, stage="dpo")
    dataset = load_dpo_dataset(cfg, processor)
    before = rss_mb()

    epochs: list[float] = []

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, a, state, control, **kw):
            epochs.append(time.perf_counter() - self.t0)

    t0 = time.perf_counter()
    trainer = HallucinationDPOTrainer(model=model, ref_model=None, args=cfg, train_dataset=dataset,
                                      processing_class=processor, peft_config=peft_config,
                                      ref_cache=reference_cache(cfg, dataset, processor), callbacks=[EpochTimer()])
    init = time.perf_counter() - t0
    result = trainer.train()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "peft": peft, "epoch_seconds": [round(e, 2) for e in epochs],
            "reference_pass_seconds": round(getattr(trainer, "ref_precompute_seconds", 0.0), 2),
            "init_seconds": round(init, 2), "peak_rss_mb": round(peak), "model_rss_mb": round(peak - before),
            "reference_model_loaded": trainer.ref_model is not None, "train_loss": round(result.training_loss, 4),
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--child", nargs=3, metavar=("MODE", "PEFT", "PATHS_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, peft, paths = args.child
        print("RESULT " + json.dumps(child(mode, peft, json.loads(paths), args)))
        return 0
    root = Path(tempfile.mkdtemp(prefix="bench-ref-"))
    try:
        return _compare(root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _compare(root: Path, args) -> int:
    paths = prepare(root, args)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), TQDM_DISABLE="1",
               PYTHONPATH=str(REPO))
    results = []
    for mode, peft in SETTINGS:
        cmd = [sys.executable, __file__, "--pairs", str(args.pairs), "--epochs", str(args.epochs), "--batch",
               str(args.batch), "--hidden", str(args.hidden), "--layers", str(args.layers),
               "--child", mode, peft, json.dumps(paths)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            return 1
        results.append(json.loads(line[len("RESULT "):]))
    print(f"tiny LLaVA, {results[0]['parameters'] / 1e6:.1f}M parameters, {args.pairs} pairs, batch {args.batch}, "
          f"{args.epochs} epochs, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    print(f"{'setting':<17}{'ref pass s':>11}{'s/epoch':>10}{'peak RSS MB':>13}{'model RSS MB':>14}{'ref model':>11}"
          f"{'train loss':>12}")
    for r in results:
        per_epoch = sum(r["epoch_seconds"]) / max(len(r["epoch_seconds"]), 1)
        print(f"{r['mode'] + '/' + r['peft']:<17}{r['reference_pass_seconds']:>11.2f}{per_epoch:>10.2f}"
              f"{r['peak_rss_mb']:>13}{r['model_rss_mb']:>14}{'yes' if r['reference_model_loaded'] else 'no':>11}"
              f"{r['train_loss']:>12.4f}")
    print(json.dumps(results), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
