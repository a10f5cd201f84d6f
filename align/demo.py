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
            print_targets(check_targets(report, stages_wall(report), quick=False))
    print(f"demo finished in {total} s -> {out}/report.md, {out}/metrics.png, {out}/export/")
    return 0


# issue 2 sets the DPO target, issue 6 the PPO one; GRPO is reported beside them without a target
TARGET_CUT = {"dpo": 0.50, "ppo": 0.30}
MIN_SFT_CHAIR_S = 0.20          # the SFT model must really hallucinate
MIN_SFT_POPE_RANDOM = 0.75      # ... and answer yes/no well above chance
MAX_RECALL_DROP = 0.05          # every aligned checkpoint


def stages_wall(report: dict) -> float:
    """A run's wall as the sum of its stages' own times, so that a --resume that skipped them (or a bench
    of finished runs) still checks the run's."""
    return sum(v or 0.0 for v in (report.get("timings") or {}).values())


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
    if sft["chair_s"] < MIN_SFT_CHAIR_S:
        misses.append(f"SFT CHAIR_s {sft['chair_s']:.3f} < {MIN_SFT_CHAIR_S:.2f}")
    if sft["pope"]["random"]["accuracy"] < MIN_SFT_POPE_RANDOM:
        misses.append(f"SFT POPE-random accuracy {sft['pope']['random']['accuracy']:.3f} < "
                      f"{MIN_SFT_POPE_RANDOM:.2f}")
    for name, r in res.items():
        if name == "sft":
            continue
        cut = (sft["chair_s"] - r["chair_s"]) / sft["chair_s"] if sft["chair_s"] else 0.0
        need = TARGET_CUT.get(name, 0.0)
        if cut < need:
            misses.append(f"{name} CHAIR_s cut {100 * cut:.0f}% < {100 * need:.0f}%"
                          + _interval(report, name, "chair_s_relative"))
        if sft["recall"] - r["recall"] > MAX_RECALL_DROP:
            misses.append(f"{name} recall fell {sft['recall'] - r['recall']:.3f} > {MAX_RECALL_DROP:.2f}")
        if name == "dpo" and r["pope"]["adversarial"]["f1"] < sft["pope"]["adversarial"]["f1"]:
            misses.append(f"dpo POPE-adversarial F1 {r['pope']['adversarial']['f1']:.3f} < SFT's "
                          f"{sft['pope']['adversarial']['f1']:.3f}"
                          + _interval(report, name, "pope_adversarial_f1_delta"))
    return misses


def target_figures(report: dict) -> dict[str, tuple[float, float]]:
    """The quality targets that check_targets checks on one run, as {target: (figure, least it may be)}
    in percent or points, every one met when figure >= least: what across_seeds averages over seeds."""
    res, sft = report["results"], report["results"]["sft"]
    out = {"SFT CHAIR_s (%)": (100 * sft["chair_s"], 100 * MIN_SFT_CHAIR_S),
           "SFT POPE-random accuracy (%)": (100 * sft["pope"]["random"]["accuracy"], 100 * MIN_SFT_POPE_RANDOM)}
    for name, r in res.items():
        if name == "sft":
            continue
        if name in TARGET_CUT and sft["chair_s"]:
            out[f"{name} CHAIR_s cut (%)"] = (100 * (sft["chair_s"] - r["chair_s"]) / sft["chair_s"],
                                             100 * TARGET_CUT[name])
        out[f"{name} recall change (points)"] = (100 * (r["recall"] - sft["recall"]), -100 * MAX_RECALL_DROP)
        if name == "dpo":
            out["dpo POPE-adversarial F1 change (points)"] = (
                100 * (r["pope"]["adversarial"]["f1"] - sft["pope"]["adversarial"]["f1"]), 0.0)
    # rounded so that a figure on its target's edge (100 * (0.80 - 0.85) = -5.000000000000004) meets it here
    # as in check_targets
    return {name: (round(v, 9), round(least, 9)) for name, (v, least) in out.items()}


def across_seeds(reports: dict[int, dict]) -> list[dict]:
    """Each target over several seeds' runs: its mean with a 95 % t interval over the seeds, whether that
    interval lies wholly on the target's side ("holds"), wholly off it ("fails") or across it ("undecided"),
    and on how many seeds the figure itself met the target.

    A seed's figure misses a target now and then by noise alone (POPE F1 is measured to about +-1.3 points);
    the mean over seeds says whether the demo meets it as a rule. Targets only some runs have (a run
    without PPO) are averaged over the runs that have them."""
    from reward.significance import seed_mean_interval

    figures = {seed: target_figures(r) for seed, r in reports.items()}
    names = list(dict.fromkeys(n for f in figures.values() for n in f))
    rows = []
    for name in names:
        pairs = {seed: f[name] for seed, f in figures.items() if name in f}
        values = [v for v, _ in pairs.values()]
        least = next(iter(pairs.values()))[1]
        ci = seed_mean_interval(values)
        verdict = ("undecided" if ci["low"] is None or ci["low"] < least <= ci["high"]
                   else "holds" if ci["low"] >= least else "fails")
        rows.append({"target": name, "least": least, "seeds": list(pairs), "values": values, **ci,
                     "met": sum(v >= least for v in values), "verdict": verdict})
    return rows


def format_across_seeds(rows: list[dict]) -> list[str]:
    """One line a target: 'dpo recall change (points) -3.7 [-4.8, -2.7] over 8 seeds, target >= -5.0:
    holds (met on 7 of 8)'."""
    lines = []
    for r in rows:
        f = "+.1f" if "change" in r["target"] else ".1f"          # signed: a change
        ci = f" [{r['low']:{f}}, {r['high']:{f}}]" if r["low"] is not None else ""
        lines.append(f"  {r['target']} {r['mean']:{f}}{ci} over {r['n']} seed{'s' if r['n'] > 1 else ''}, "
                     f"target >= {r['least']:{f}}: {r['verdict']} (met on {r['met']} of {r['n']})")
    return lines


def print_targets(misses: list[str]) -> None:
    """Whether this run shows what the demo is for: an SFT model that hallucinates and answers yes/no,
    and alignment that cuts the hallucination without losing recall or POPE."""
    if not misses:
        print("issue 2's targets: every one met")
        return
    print("issue 2's targets missed by this run: " + "; ".join(misses))
    print("  (this tiny model's training is chaotic: another --seed, or another CPU, draws another model; "
          "one run measures each change to about +-1-2 points, so a target can miss by noise alone: "
          "scripts/bench_demo.py --seeds 0 1 2 ... checks each target's mean over seeds; README.md, 'Other seeds')")


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
