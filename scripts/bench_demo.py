"""Run the full demo for several seeds and check issue 2's targets on each.

    .venv/bin/python scripts/bench_demo.py --seeds 0 1 2 [--out runs/bench] [--quick]

Targets (full demo): wall time < 10 min; SFT CHAIR_s >= 0.20 and POPE-random accuracy >= 0.75; DPO cuts
CHAIR_s by 50 % and PPO by 30 % relative to SFT (GRPO is only reported), every aligned checkpoint keeps
recall within 0.05 of SFT's, and DPO's POPE-adversarial F1 is not below SFT's. Prints one line per seed and
checkpoint, each change with its 95 % paired bootstrap interval, and exits non-zero if a target is missed (a
miss whose interval still reaches the target says so: the benchmark cannot tell it from noise). Ends with a
summary over the seeds (which met every target, and each target's misses), then each target's mean over the
seeds with a 95 % t interval: a seed's figure misses now and then by benchmark noise alone, the mean says
whether the demo meets the target as a rule. All of it also goes to OUT/bench.json (rewritten after every
seed, so a stopped bench keeps what it measured).

    .venv/bin/python scripts/bench_demo.py --reports RUN [RUN ...] [--out DIR]

checks finished demo runs (RUN/report.json; the wall is the sum of its stage times) instead of running them.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from align.demo import across_seeds, format_across_seeds, stages_wall  # noqa: E402
from align.demo import check_targets as check  # noqa: E402
from align.report import change_summary, host_info, host_line  # noqa: E402
from reward.files import read_json, write_json  # noqa: E402

def target_of(miss: str) -> str:
    """The target a miss message names: its words before the first figure ("dpo CHAIR_s cut 45% < 50%" ->
    "dpo CHAIR_s cut")."""
    return re.split(r" [-+]?\d", miss, maxsplit=1)[0]


def summarize(misses_by_seed: dict[int, list[str]]) -> list[str]:
    """Lines that end a bench: the seeds that met every target, then each missed target with its seeds."""
    met = [s for s, m in misses_by_seed.items() if not m]
    lines = [f"every target met on {len(met)} of {len(misses_by_seed)} seeds"
             + (f" ({', '.join(map(str, met))})" if met else "")]
    by_target: dict[str, list[int]] = {}
    for seed, misses in misses_by_seed.items():
        for miss in misses:
            by_target.setdefault(target_of(miss), []).append(seed)
    lines += [f"  missed {target}: seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
              for target, seeds in by_target.items()]
    return lines


def write_bench(out: Path, misses_by_seed: dict[int, list[str]], walls: dict[int, float],
                host: dict | None = None, means: list[dict] | None = None) -> None:
    """OUT/bench.json (atomic), rewritten after every seed so that a stopped bench keeps what it measured.
    `host` (align.report.host_info): wall times and figures compare only between alike CPUs. `means`:
    align.demo.across_seeds of the seeds so far."""
    write_json(out / "bench.json", {"seeds": {str(s): {"wall_s": walls.get(s), "misses": m}
                                              for s, m in misses_by_seed.items()},
                                    "summary": summarize(misses_by_seed), "across_seeds": means or [],
                                    "host": host})


def print_run(seed: int, report: dict) -> None:
    """One line a checkpoint, then each aligned checkpoint's changes with their intervals."""
    for name, r in report["results"].items():
        p = r["pope"]
        print(f"seed {seed} {name:>5}: CHAIR_s {100 * r['chair_s']:5.1f}  CHAIR_i {100 * r['chair_i']:5.1f}  "
              f"recall {100 * r['recall']:5.1f}  POPE acc r/p/a {100 * p['random']['accuracy']:.1f}/"
              f"{100 * p['popular']['accuracy']:.1f}/{100 * p['adversarial']['accuracy']:.1f}  "
              f"adv F1 {100 * p['adversarial']['f1']:.1f}" + _error_types(r))
    for name, d in (report.get("changes") or {}).items():
        print(f"seed {seed} {name:>5} vs {report.get('relative_to')}: {change_summary(d)}")


def run_demo(seed: int, out: Path, quick: bool) -> tuple[dict | None, float]:
    """Run the demo into `out`: (its report, or None if it failed, saying why; the wall)."""
    t0 = time.time()
    cmd = [sys.executable, "-m", "align", "demo", "--out", str(out), "--seed", str(seed)]
    proc = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        print(f"seed {seed}: demo failed (exit {proc.returncode})\n{proc.stderr[-2000:]}")
        return None, wall
    return read_json(out / "report.json"), wall


def finished_run(run: Path) -> tuple[int, dict, float]:
    """A finished demo run's (seed, report, wall = the sum of its stage times)."""
    path = Path(run) / "report.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no report.json: pass a finished demo run folder (halign demo --out RUN)")
    report = read_json(path)
    return int(report["seed"]), report, stages_wall(report)


def _error_types(result: dict) -> str:
    """"  subst/ins 35/21": what the aligners can remove (insertions) beside what they mostly cannot."""
    e = (result.get("analysis") or {}).get("error_types")
    return f"  subst/ins {e['substitutions']}/{e['insertions']}" if e else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--reports", type=Path, nargs="+", metavar="RUN",
                    help="check these finished demo runs instead of running the demo (--seeds is ignored)")
    ap.add_argument("--out", default="runs/bench")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    misses_by_seed: dict[int, list[str]] = {}
    walls: dict[int, float] = {}
    reports: dict[int, dict] = {}
    host = host_info()
    print(host_line(host))
    runs = [finished_run(r) for r in args.reports] if args.reports else [(s, None, None) for s in args.seeds]
    for seed, report, wall in runs:
        if report is None:
            report, wall = run_demo(seed, Path(args.out) / f"seed{seed}", args.quick)
            if report is None:
                misses_by_seed[seed] = ["demo run failed"]   # its exit code is printed above
                write_bench(Path(args.out), misses_by_seed, walls, host)
                continue
        print_run(seed, report)
        misses = check(report, wall, args.quick)
        print(f"seed {seed}: wall {wall:.0f} s; " + ("all targets met" if not misses else "MISSED: " + "; ".join(misses)))
        misses_by_seed[seed], walls[seed] = misses, round(wall, 1)
        if not args.quick:                  # the quality targets are for the full demo
            reports[seed] = report
        write_bench(Path(args.out), misses_by_seed, walls, host, across_seeds(reports) if reports else None)
    print("\n".join(summarize(misses_by_seed)))
    if len(reports) > 1:
        print("each target's mean over the seeds, 95 % t interval over the seeds:")
        print("\n".join(format_across_seeds(across_seeds(reports))))
    return 1 if any(misses_by_seed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
