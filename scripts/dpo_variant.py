"""Replay a finished demo run's DPO with changed settings, evaluate it beside the run's SFT model, and check
issue 2's DPO targets: what the README's "DPO variants" rows did (the demo's dpo and eval stages run
again on a finished run's SFT model).

    .venv/bin/python scripts/dpo_variant.py RUN [RUN ...] --out DIR [--set FIELD=VALUE ...]
                                            [--pairs FILE | --pairs-set FIELD=VALUE ...]

    # e.g. the beta 0.3 row, on the bench's seeds 1 and 4:
    .venv/bin/python scripts/dpo_variant.py /tmp/bench7/seed1 /tmp/bench8/seed4 --out /tmp/beta3 --set beta=0.3
    # or pairs mined another way from each run's own samples (the pairs stage again, then dpo and eval):
    .venv/bin/python scripts/dpo_variant.py RUN --out /tmp/swap2 --pairs-set edit_mix=insert=1,swap=2,omit=1
    # or pairs mined from new samples of the run's SFT model (the samples and pairs stages again):
    .venv/bin/python scripts/dpo_variant.py RUN --out /tmp/s8 --samples-set num_samples=8

RUN is a finished `halign demo` run (or one seed of `scripts/bench_demo.py`). For each RUN the script reads
its dpo and eval stage manifests (RUN/dpo/stage.json, RUN/eval/stage.json), so the replay uses exactly the
config text, pairs, SFT model and seed that run used, with the --set fields changed (YAML values: --set
loss_type='[ipo, sft]'). DIR/<run folder name>/ becomes a pipeline run of the stages dpo and eval (SFT and
the variant, with paired bootstrap intervals), plus variant.yaml and dpo.yaml. With --pairs-set, a pairs
stage comes first: the run's pairs stage arguments (RUN/pairs/stage.json) with those fields changed
(`halign data pairs --help` lists them). With --samples-set, the run's samples stage comes before that
(`halign eval generate --help`), and the pairs are mined from its responses. With no --set, the replay
reproduces the run's DPO. At the end it prints every run's variant beside the run's own DPO (cut, recall,
POPE-adversarial F1 with its interval, error types, targets missed) and the counts over all runs, also in
DIR/summary.json. Exits 1 if a DPO target is missed (cut >= 50 %, recall drop <= 0.05, POPE-adversarial
F1 not below SFT's), 2 on bad input.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from align.demo import check_targets  # noqa: E402
from align.report import change_summary  # noqa: E402
from reward.files import InputError, read_json, write_json, write_text  # noqa: E402


def parse_sets(items: list[str], flag: str = "--set", example: str = "beta=0.3") -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"{flag} {item!r} is not FIELD=VALUE", fix=f"write e.g. {flag} {example}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise InputError(f"{flag} {item!r}: the value is not YAML ({e})",
                             fix=f"quote lists, e.g. --set loss_type='[sigmoid, sft]'") from None
    return out


def changed_stage(run: Path, name: str, kind: str, command, sets: dict, cli: str) -> dict:
    """The run's `name` stage with changed arguments, each checked against the stage command's own
    parameters (`command`, what `halign {cli}` runs)."""
    import inspect
    allowed = set(inspect.signature(command).parameters) - {"out"}
    bad = sorted(set(sets) - allowed)
    if bad:
        raise InputError(f"--{name}-set: {bad[0]!r} is not an argument of the {name} stage",
                         fix=f"one of {', '.join(sorted(allowed))} (`halign {cli} --help`)")
    args = dict(stage_identity(run, name)["args"])
    args.update(sets)
    return {"name": name, "kind": kind, "args": args}


def pairs_stage(run: Path, pairs_sets: dict) -> dict:
    """The run's pairs stage with changed arguments."""
    from data_prep.pairs import pairs_command
    return changed_stage(run, "pairs", "pairs", pairs_command, pairs_sets, "data pairs")


def samples_stage(run: Path, samples_sets: dict) -> dict:
    """The run's samples stage (the SFT model's sampled captions the pairs are mined from) with changed
    arguments."""
    from align.generate import generate_command
    return changed_stage(run, "samples", "generate", generate_command, samples_sets, "eval generate")


def stage_identity(run: Path, stage: str) -> dict:
    path = run / stage / "stage.json"
    if not path.is_file():
        raise InputError(f"no finished {stage} stage", file=path,
                         fix="point at a finished demo run (`halign demo --out RUN`) or a bench seed folder")
    return read_json(path, "stage manifest")["identity"]   # a truncated manifest: a clear error, not a traceback


def variant_pipeline(run: Path, out: Path, sets: dict, pairs: Path | None,
                     pairs_sets: dict | None = None, samples_sets: dict | None = None) -> tuple[dict, str]:
    """The pipeline ([samples,] [pairs,] dpo, eval) and the DPO config text, checked before anything is
    written."""
    from align.config import check_config_file
    from align.dpo import DPOStageConfig

    dpo, ev = stage_identity(run, "dpo"), stage_identity(run, "eval")
    config = yaml.safe_load(dpo["config_text"] or "") or {}
    args = dict(dpo["args"])
    for k, v in sets.items():   # a field the run passed as an argument is changed there, else in the YAML
        (args if k in args else config)[k] = v
    if pairs is not None:
        if not pairs.is_file():
            raise InputError("pairs file not found", file=pairs, fix="give a pairs.jsonl written by `halign data pairs`")
        args["dataset"] = str(pairs.resolve())
    sampled = samples_stage(run, samples_sets) if samples_sets else None
    mined = pairs_stage(run, pairs_sets or {}) if pairs_sets or sampled else None
    if sampled:   # new samples mean new pairs: mined from them with the run's (or the changed) pairs arguments
        mined["args"]["responses"] = "{samples}/responses.jsonl"
    if mined:
        args["dataset"] = "{pairs}/pairs.jsonl"
    header = f"# {run / 'dpo'}'s config" + (f", with {', '.join(f'{k}={v}' for k, v in sets.items())}" if sets else "")
    text = header + "\n" + yaml.safe_dump(config, sort_keys=False)
    with tempfile.TemporaryDirectory() as tmp:   # unknown fields are refused before DIR is touched
        probe = Path(tmp) / "dpo.yaml"
        probe.write_text(text)
        try:
            check_config_file(probe, DPOStageConfig)
        except InputError as e:
            raise InputError(e.problem, file="--set", fix="`halign dpo --help` lists the fields") from None
    eval_args = dict(ev["args"])
    sft_model = eval_args["checkpoints"].get("sft") or dpo["args"]["model_name_or_path"]
    eval_args["checkpoints"] = {"sft": sft_model, "dpo": "{dpo}/model"}
    seed = dpo["args"].get("seed", 0)
    pipeline = {"name": f"variant-{run.name}", "seed": seed, "stages": [st for st in (sampled, mined) if st]}
    pipeline["stages"] += [
        {"name": "dpo", "kind": "dpo", "config": str((out / "dpo.yaml").resolve()), "args": args},
        {"name": "eval", "kind": "eval", "args": eval_args}]
    return pipeline, text


def dpo_seconds(run: Path) -> float | None:
    return read_json(run / "dpo" / "stage.json")["metrics"].get("seconds")


def dpo_outcome(report: dict, seconds: float | None, eval_dir: Path | None = None) -> dict:
    """One report's DPO checkpoint against its SFT model: what a tuning rule judges. A report written before
    the error types were (2026-11-25) gets them from the DPO captions' CHAIR file in `eval_dir`."""
    sft, dpo = report["results"]["sft"], report["results"]["dpo"]
    error_types = dpo.get("analysis", {}).get("error_types")
    if error_types is None and eval_dir is not None and (eval_dir / "dpo" / "chair.json").is_file():
        from reward.analysis import hallucination_analysis
        per_caption = read_json(eval_dir / "dpo" / "chair.json")["per_caption"]
        error_types = hallucination_analysis(per_caption)["error_types"]
    ci = report.get("changes", {}).get("dpo", {}).get("ci", {}).get("pope_adversarial_f1_delta")
    return {"cut": round(1 - dpo["chair_s"] / sft["chair_s"], 4) if sft["chair_s"] else 0.0,
            "recall_delta": round(dpo["recall"] - sft["recall"], 4),
            "pope_adversarial_f1_delta": round(dpo["pope"]["adversarial"]["f1"] - sft["pope"]["adversarial"]["f1"], 4),
            "pope_adversarial_f1_interval": [ci["low"], ci["high"]] if ci else None,
            "misses": [m for m in check_targets(report, 0.0, quick=True) if m.startswith("dpo")],
            "error_types": error_types, "dpo_seconds": seconds}


def summarise(outcomes: dict[str, dict[str, dict]]) -> tuple[dict, list[str]]:
    """{run: {"variant": outcome, "run": outcome}} -> totals per side, and the lines to print: every run's
    variant beside the run's own DPO, then the counts a rule over several seeds is judged on."""
    def fmt(o: dict, own: dict) -> str:
        e, f = o["error_types"], o["pope_adversarial_f1_interval"]
        et = (lambda x: f"{x['substitutions']}/{x['insertions']}/{x['deletions']}" if x else "?")
        secs = (lambda x: f"{x:.0f} s" if x is not None else "? s")
        return (f"cut {100 * o['cut']:.1f} % ({100 * own['cut']:.1f}), recall {100 * o['recall_delta']:+.1f} "
                f"({100 * own['recall_delta']:+.1f}), POPE-adv F1 {100 * o['pope_adversarial_f1_delta']:+.1f}"
                + (f" [{100 * f[0]:+.1f}, {100 * f[1]:+.1f}]" if f else "")
                + f" ({100 * own['pope_adversarial_f1_delta']:+.1f}), subst/ins/del {et(e)} ({et(own['error_types'])})"
                + f", DPO {secs(o['dpo_seconds'])} ({secs(own['dpo_seconds'])}), {len(o['misses'])} missed "
                  f"({len(own['misses'])})")
    totals = {}
    for side in ("variant", "run"):
        outs = {name: o[side] for name, o in outcomes.items()}
        totals[side] = {"runs": len(outs), "meeting_every_dpo_target": sorted(n for n, o in outs.items() if not o["misses"]),
                        "dpo_targets_missed": sum(len(o["misses"]) for o in outs.values()),
                        "f1_interval_below_zero": sorted(n for n, o in outs.items()
                                                         if o["pope_adversarial_f1_interval"]
                                                         and o["pope_adversarial_f1_interval"][1] < 0)}
    v, r = totals["variant"], totals["run"]
    lines = ["variant vs the run's own DPO (in brackets):"]
    lines += [f"  {name}: {fmt(o['variant'], o['run'])}" for name, o in outcomes.items()]
    lines.append(f"every DPO target met on {len(v['meeting_every_dpo_target'])} of {v['runs']} runs "
                 f"({len(r['meeting_every_dpo_target'])}); targets missed {v['dpo_targets_missed']} "
                 f"({r['dpo_targets_missed']}); POPE-adversarial F1 interval wholly below 0: "
                 f"{', '.join(v['f1_interval_below_zero']) or 'none'} ({', '.join(r['f1_interval_below_zero']) or 'none'})")
    return totals, lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished demo runs (e.g. /tmp/bench7/seed1)")
    ap.add_argument("--out", required=True, type=Path, help="folder for the variant runs, one per RUN")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="FIELD=VALUE",
                    help="a DPO config field to change (repeatable)")
    pairs = ap.add_mutually_exclusive_group()
    pairs.add_argument("--pairs", type=Path, help="train on this pairs file instead of the run's")
    pairs.add_argument("--pairs-set", dest="pairs_sets", action="append", default=[], metavar="FIELD=VALUE",
                       help="mine each run's pairs again with this pairs-stage argument changed (repeatable), "
                            "e.g. edit_mix=insert=1,swap=2,omit=1")
    ap.add_argument("--samples-set", dest="samples_sets", action="append", default=[], metavar="FIELD=VALUE",
                    help="sample the run's SFT model again with this samples-stage argument changed (repeatable), "
                         "e.g. num_samples=8; the pairs are then mined again from the new samples")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()
    try:
        sets = parse_sets(args.sets)
        pairs_sets = parse_sets(args.pairs_sets, "--pairs-set", "edit_mix=insert=1,swap=2,omit=1")
        samples_sets = parse_sets(args.samples_sets, "--samples-set", "num_samples=8")
        if samples_sets and args.pairs is not None:
            raise InputError("--samples-set mines new pairs, --pairs gives a fixed pairs file",
                             fix="drop one of them")
        names = [r.name for r in args.runs]
        if len(set(names)) < len(names):
            raise InputError(f"two runs share a folder name ({', '.join(names)})",
                             fix="give runs with distinct folder names, or run the script once per bench")
        plans = [(run, args.out / run.name,
                  *variant_pipeline(run, args.out / run.name, sets, args.pairs, pairs_sets, samples_sets))
                 for run in args.runs]
    except InputError as e:
        print(f"dpo_variant: error: {e.message()}", file=sys.stderr)
        return 2
    missed, outcomes = False, {}
    for run, out, pipeline, text in plans:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "dpo.yaml", text)      # atomic: a stopped replay leaves no half-written config
        write_text(out / "variant.yaml", yaml.safe_dump(pipeline, sort_keys=False))
        print(f"{run.name}: replaying {run}'s dpo -> {out}", flush=True)
        # its own process, as bench_demo runs the demo; from the caller's folder, like the run it replays, so a
        # relative path in that run's manifests means the same
        rc = subprocess.call([sys.executable, "-m", "align", "pipeline", "--config", str(out / "variant.yaml"),
                              "--out", str(out)])
        if rc != 0:
            print(f"{run.name}: the variant's pipeline failed (exit {rc}); its log is above")
            missed = True
            continue
        report = read_json(out / "eval" / "report.json")
        sft, dpo = report["results"]["sft"], report["results"]["dpo"]
        outcomes[run.name] = {"variant": dpo_outcome(report, dpo_seconds(out), out / "eval"),
                              "run": dpo_outcome(read_json(run / "eval" / "report.json"), dpo_seconds(run),
                                                 run / "eval")}
        misses = outcomes[run.name]["variant"]["misses"]
        print(f"{run.name}: CHAIR_s {100 * sft['chair_s']:.1f} -> {100 * dpo['chair_s']:.1f}; "
              f"dpo vs sft: {change_summary(report['changes']['dpo'])}; "
              + ("DPO targets met" if not misses else "MISSED: " + "; ".join(misses)))
        missed = missed or bool(misses)
    if outcomes:
        totals, lines = summarise(outcomes)
        print("\n".join(lines))
        write_json(args.out / "summary.json", {"runs": outcomes, "totals": totals})
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
