"""`halign demo`: the whole pipeline on the synthetic world, offline, on a CPU.

It runs configs/demo/pipeline.yaml (with configs/demo/quick.yaml's smaller sizes under --quick) into
OUT, then completes OUT/report.json with every stage's wall time and the host, prints the comparison
table, and checks issue 2's targets on the run (the check scripts/bench_demo.py makes over several seeds).
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
                               # the host the figures came from (a resumed run's eval stage may be older)
                               "host": evaluated.get("host") or host_info()}, figures=figures,
                              intervals={n: d.get("ci") for n, d in (evaluated.get("changes") or {}).items()})
        print_summary(report)
        if not quick:          # the quality targets are for the full demo
            # the wall is the stages' own times, so that a --resume that skipped them still checks the run's
            wall = sum(v or 0.0 for v in report["timings"].values())
            print_targets(check_targets(report, wall, quick=False))
    print(f"demo finished in {total} s -> {out}/report.md, {out}/metrics.png, {out}/export/")
    return 0


# issue 2 sets the DPO target, issue 6 the PPO one; GRPO is reported beside them without a target
TARGET_CUT = {"dpo": 0.50, "ppo": 0.30}


def _interval(report: dict, name: str, key: str) -> str:
    c = (report.get("changes", {}).get(name, {}).get("ci") or {}).get(key)
    if not c:
        return ""
    reaches = c["high"] >= 0 if key.endswith("_delta") else c["low"] <= -TARGET_CUT.get(name, 0.0)
    return (f" (95 % interval [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]"
            + (": within noise of the target)" if reaches else ")"))


def check_targets(report: dict, wall: float, quick: bool) -> list[str]:
    """Issue 2's targets (issue 6's for PPO) missed by one demo run, one message each, its target's name
    first; [] if every one is met. With `quick`, the 10-minute wall is not checked."""
    res = report["results"]
    sft = res["sft"]
    misses = []
    if not quick and wall >= 600:
        misses.append(f"wall {wall:.0f} s >= 600 s")
    if sft["chair_s"] < 0.20:
        misses.append(f"SFT CHAIR_s {sft['chair_s']:.3f} < 0.20")
    if sft["pope"]["random"]["accuracy"] < 0.75:
        misses.append(f"SFT POPE-random accuracy {sft['pope']['random']['accuracy']:.3f} < 0.75")
    for name, r in res.items():
        if name == "sft":
            continue
        cut = (sft["chair_s"] - r["chair_s"]) / sft["chair_s"] if sft["chair_s"] else 0.0
        need = TARGET_CUT.get(name, 0.0)
        if cut < need:
            misses.append(f"{name} CHAIR_s cut {100 * cut:.0f}% < {100 * need:.0f}%"
                          + _interval(report, name, "chair_s_relative"))
        if sft["recall"] - r["recall"] > 0.05:
            misses.append(f"{name} recall fell {sft['recall'] - r['recall']:.3f} > 0.05")
        if name == "dpo" and r["pope"]["adversarial"]["f1"] < sft["pope"]["adversarial"]["f1"]:
            misses.append(f"dpo POPE-adversarial F1 {r['pope']['adversarial']['f1']:.3f} < SFT's "
                          f"{sft['pope']['adversarial']['f1']:.3f}"
                          + _interval(report, name, "pope_adversarial_f1_delta"))
    return misses


def print_targets(misses: list[str]) -> None:
    """Whether this run shows what the demo is for: an SFT model that hallucinates and answers yes/no,
    and alignment that cuts the hallucination without losing recall or POPE."""
    if not misses:
        print("issue 2's targets: every one met")
        return
    print("issue 2's targets missed by this run: " + "; ".join(misses))
    print("  (this tiny model's training is chaotic: another --seed, or another CPU, draws another model; "
          "README.md, 'Other seeds')")


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
