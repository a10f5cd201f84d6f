"""`halign demo`: the whole pipeline on the synthetic world, offline, on a CPU.

It runs configs/demo/pipeline.yaml (with configs/demo/quick.yaml's smaller sizes under --quick) into
OUT, then completes OUT/report.json with every stage's wall time and prints the comparison table.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from reward.files import read_json

DEMO_DIR = Path(__file__).resolve().parents[1] / "configs" / "demo"


def demo(out: Path = Path("runs/demo"), seed: int = 0, quick: bool = False, resume: bool = False) -> int:
    """Run the whole pipeline on the synthetic world, offline, on a CPU.

    Renders a world of shapes whose training captions hallucinate co-occurring objects, builds and
    pretrains a tiny LLaVA, SFTs it (it learns to hallucinate), mines preference pairs, aligns it with DPO,
    scores every checkpoint with CHAIR and POPE, and exports the aligned model. Writes OUT/report.md,
    OUT/report.json, OUT/metrics.png and OUT/export/.

    Args:
        out: run folder
        seed: random seed for the world, training and sampling
        quick: a smaller world and fewer steps (a few minutes; what CI runs)
        resume: skip stages that already finished with the same config and inputs
    """
    from align.pipeline import load_pipeline, run_pipeline, stage_timings

    import torch
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))))
    overrides = yaml.safe_load((DEMO_DIR / "quick.yaml").read_text()) if quick else None
    p = load_pipeline(DEMO_DIR / "pipeline.yaml", out=out, seed=seed, overrides=overrides)
    t0 = time.time()
    run_pipeline(p, resume=resume)
    total = round(time.time() - t0, 1)
    eval_report = Path(out) / "eval" / "report.json"
    if eval_report.is_file():
        from align.report import host_info, write_report

        print()
        figures = {"PPO: reward, hallucination and KL per step": Path(out) / "ppo" / "curves.png",
                   "GRPO: reward and KL per step": Path(out) / "grpo" / "curves.png"}
        evaluated = read_json(eval_report)
        report = write_report(Path(out), evaluated["results"],
                              {"seed": seed, "quick": quick, "timings": stage_timings(p),
                               "host": host_info()}, figures=figures,
                              intervals={n: d.get("ci") for n, d in (evaluated.get("changes") or {}).items()})
        print_summary(report)
    print(f"demo finished in {total} s -> {out}/report.md, {out}/metrics.png, {out}/export/")
    return 0


def print_summary(report: dict) -> None:
    from align.report import change_summary, host_line

    changes = report.get("changes") or {}
    for name, d in changes.items():
        print(f"{name} vs {report.get('relative_to')}: " + change_summary(d))
    if any(d.get("ci") for d in changes.values()):
        print("[low, high]: 95 % paired bootstrap interval of the change over the eval images / POPE questions")
    t = report.get("timings", {})
    print("stage wall times (s): " + ", ".join(f"{k} {v}" for k, v in t.items()))
    if report.get("host"):
        print(host_line(report["host"]))
