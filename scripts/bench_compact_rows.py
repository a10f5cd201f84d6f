"""DPO time with equal-text pairs run once (the compact batch) against TRL's full layout, same steps.

    .venv/bin/python scripts/bench_compact_rows.py RUN [--steps 60] [--loss-type sigmoid mdpo_conditional mdpo_anchor]
                                                   [--strategy inject image qa] [--out DIR]

RUN is a finished `halign demo` run: its SFT model and its world's pairs images. The pairs are mined again
with --strategy (`image`: the caption with a corrupted copy of the image as the rejected side, equal texts;
`qa` with rehearsal rows, equal texts too), then `halign dpo` runs --steps steps from the SFT model twice
with the demo's DPO config and --loss-type: once as shipped (a pair with equal texts keeps only its chosen
row) and once with every pair's rejected row (the layout TRL builds). Prints each run's training seconds,
the rows a step ran, and the largest relative difference between the two runs' logged losses.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--loss-type", nargs="+", default=["sigmoid", "mdpo_conditional", "mdpo_anchor"])
    ap.add_argument("--strategy", nargs="+", default=["inject", "image"])
    ap.add_argument("--out", type=Path, default=None, help="keep the pairs and runs here (default: a temp folder)")
    args = ap.parse_args()

    from align import dpo_objective
    from align.config import parse_config
    from align.dpo import DPOStageConfig, run_dpo
    from align.dpo_variants import HallucinationDPOTrainer
    from data_prep.pairs import pairs_command

    world = args.run / "world"
    if not (args.run / "sft" / "model").is_dir() or not (world / "instances_pairs.json").is_file():
        raise SystemExit(f"{args.run}: not a finished demo run (no sft/model or world/instances_pairs.json)")
    out = args.out or Path(tempfile.mkdtemp(prefix="compact-rows-"))
    pairs = out / "pairs" / "pairs.jsonl"
    pairs.parent.mkdir(parents=True, exist_ok=True)
    pairs_command(annotations=world / "instances_pairs.json", captions=world / "captions_pairs.json",
                  images=world, out=pairs, strategy=args.strategy, vocab="shapes", seed=0, qa_replay=True)

    rows = []
    real = {name: getattr(dpo_objective, name) for name in ("halign_loss", "rehearsal_compact_loss")}

    def counting(fn):
        def wrapped(trainer, model, inputs, return_outputs):
            rows.append(inputs["input_ids"].size(0))
            return fn(trainer, model, inputs, return_outputs)
        return wrapped

    for name, fn in real.items():      # the rows each step's policy forward holds
        setattr(dpo_objective, name, counting(fn))
    results = {}
    for layout in ("compact", "full"):
        if layout == "full":            # every pair's rejected row, as TRL lays a batch out
            HallucinationDPOTrainer._compacts_rehearsal = lambda self, types: False
        rows.clear()
        cfg = parse_config(DPOStageConfig, [
            "--config", str(REPO / "configs/demo/dpo.yaml"), "--model_name_or_path", str(args.run / "sft/model"),
            "--dataset", str(pairs), "--images_dir", str(world), "--output_dir", str(out / layout),
            "--max_steps", str(args.steps), "--loss_type", *args.loss_type,
            "--loss_weights", *["1.0"] * len(args.loss_type), "--logging_steps", "10"], "dpo")
        t0 = time.time()
        metrics = run_dpo(cfg)
        results[layout] = {"seconds": time.time() - t0, "rows": sum(rows) / max(1, len(rows)),
                           "losses": [h["loss"] for h in metrics["log_history"] if "loss" in h]}
    for layout, r in results.items():
        print(f"{layout:>7}: {r['seconds']:.1f} s for {args.steps} steps, {r['rows']:.1f} rows a step "
              f"(batch {cfg.per_device_train_batch_size} pairs)")
    diffs = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(results["compact"]["losses"], results["full"]["losses"])]
    print(f"logged losses: {len(diffs)} pairs, largest relative difference {max(diffs):.1e}; pairs and runs in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
