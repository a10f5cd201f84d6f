"""The resumable pipeline runner: `halign pipeline --config FILE [--resume] [--only STAGE] [--from STAGE]`.

A pipeline YAML names stages in order; each runs into `RUN/STAGE/` and leaves a `stage.json` manifest
(resolved config, inputs with their hashes, outputs, metrics, package versions, wall time). With
`--resume` a stage whose manifest matches its config and inputs is skipped, and an interrupted training
stage continues from its last checkpoint. Paths compare relative to the run folder, so a copy of a finished
run (`cp -a runs/demo runs/try`, then `--out runs/try --resume` with one stage's config changed) reruns only
that stage and the stages after it that read its outputs. (A LoRA stage's adapter names its base model by
absolute path: after moving, rather than copying, a run with LoRA stages, rerun them with --from.)

    name: demo                       # RUN = runs_dir/name (or --out)
    runs_dir: runs
    seed: 0
    stages:
      - {name: world, kind: synth, args: {n_images: 4300, seed: "{seed}"}}
      - {name: sft, kind: sft, config: configs/demo/sft.yaml,
         args: {model_name_or_path: "{pretrain}/model", dataset: "{world}/sft_train.jsonl"}}
      - {name: dpo, kind: dpo, config: ..., accelerate_config: configs/accelerate/zero2.yaml}

Strings may use {run}, {seed}, {configs} (the shipped configs folder) and {STAGE} (that stage's folder).
Training stages run in-process unless `accelerate_config` is given; then `accelerate launch` starts them.

Iterative alignment (RLAIF-V's recipe: generate -> mine -> DPO, each round from the last round's model)
is a group with `rounds`:

      - name: iter
        rounds: 3
        start_model: "{sft}/model"          # what round 1 starts from
        stages:                              # per round; {model_in} = the model this round starts from,
          - {name: samples, kind: generate, args: {model: "{model_in}", seed: "{round}", ...}}
          - {name: pairs, kind: pairs, args: {responses: "{samples}/responses.jsonl", ...}}
          - {name: dpo, kind: dpo, config: ..., args: {model_name_or_path: "{model_in}",
                                                      dataset: "{pairs}/pairs.jsonl"}}

It becomes ordinary stages iter_r1_samples, iter_r1_pairs, iter_r1_dpo, iter_r2_samples, ... (each with
its manifest, so --resume and --from work per round); round r+1's {model_in} is round r's last training
stage's `model/`, and `{iter}` names the final round's last training stage (its model: `{iter}/model`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reward.files import InputError, read_json, write_json

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
TRAINING_KINDS = {"pretrain": ("align.pretrain", "PretrainConfig", "run"),
                  "sft": ("align.sft", "SFTStageConfig", "run_sft"),
                  "dpo": ("align.dpo", "DPOStageConfig", "run_dpo"),
                  "ppo": ("align.ppo", "PPOStageConfig", "run_ppo"),
                  "grpo": ("align.grpo", "GRPOStageConfig", "run_grpo")}
KINDS = set(TRAINING_KINDS) | {"synth", "tiny_llava", "generate", "pairs", "pope", "eval", "export"}


@dataclass
class Stage:
    name: str
    kind: str
    args: dict = field(default_factory=dict)
    config: str | None = None
    accelerate_config: str | None = None


@dataclass
class Pipeline:
    name: str
    stages: list[Stage]
    runs_dir: str = "runs"
    seed: int = 0
    run_dir: Path = Path()
    aliases: dict[str, str] = field(default_factory=dict)   # round group name -> its final stage's name

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise InputError(f"no stage named {name!r}", fix=f"stages: {', '.join(s.name for s in self.stages)}")


# ---------------------------------------------------------------- loading
def load_pipeline(path: str | Path, out: str | Path | None = None, seed: int | None = None,
                  overrides: dict[str, dict] | None = None) -> Pipeline:
    """Read a pipeline YAML; `overrides` maps stage name -> args merged over the YAML's."""
    path = Path(path)
    if not path.is_file():
        raise InputError("pipeline config not found", file=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise InputError(f"malformed YAML ({e})", file=path) from None
    allowed = {"name", "stages", "runs_dir", "seed"}
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r}", file=path, fix=f"allowed keys: {', '.join(sorted(allowed))}")
    if not data.get("stages"):
        raise InputError("no stages", file=path, fix="list the stages under `stages:`")
    stages, seen, aliases = [], set(), {}
    stage_keys = {f.name for f in dataclasses.fields(Stage)}
    entries = []
    for i, raw in enumerate(data["stages"]):
        if isinstance(raw, dict) and "rounds" in raw:
            expanded, final = expand_rounds(raw, path, i)
            entries += expanded
            aliases[raw["name"]] = final
            if raw["name"] in seen:
                raise InputError(f"two stages named {raw['name']!r}", file=path)
            seen.add(raw["name"])
        else:
            entries.append(raw)
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict) or "name" not in raw or "kind" not in raw:
            raise InputError("a stage needs `name` and `kind`", file=path, record=f"stage {i + 1}")
        bad = [k for k in raw if k not in stage_keys]
        if bad:
            raise InputError(f"unknown key {bad[0]!r} in stage {raw['name']!r}", file=path,
                             fix=f"allowed: {', '.join(sorted(stage_keys))}")
        if raw["kind"] not in KINDS:
            raise InputError(f"unknown stage kind {raw['kind']!r}", file=path, record=f"stage {raw['name']!r}",
                             fix=f"kinds: {', '.join(sorted(KINDS))}")
        if raw["name"] in seen:
            raise InputError(f"two stages named {raw['name']!r}", file=path)
        seen.add(raw["name"])
        st = Stage(**raw)
        st.args = dict(st.args or {}) | dict((overrides or {}).get(st.name, {}))
        stages.append(st)
    p = Pipeline(name=data.get("name", path.stem), stages=stages, runs_dir=data.get("runs_dir", "runs"),
                 seed=int(data.get("seed", 0) if seed is None else seed), aliases=aliases)
    p.run_dir = Path(out) if out else Path(p.runs_dir) / p.name
    return p


def expand_rounds(group: dict, path: Path, index: int) -> tuple[list[dict], str]:
    """A `rounds` group as plain stage dicts, round by round; returns (stages, name of the final stage)."""
    where = f"stage {index + 1} ({group.get('name', '?')!r})"
    allowed = {"name", "rounds", "start_model", "stages"}
    bad = [k for k in group if k not in allowed]
    if bad:
        raise InputError(f"unknown key {bad[0]!r} in a rounds group", file=path, record=where,
                         fix=f"allowed: {', '.join(sorted(allowed))}")
    rounds, subs = group.get("rounds"), group.get("stages") or []
    if "name" not in group or not isinstance(rounds, int) or rounds < 1 or not group.get("start_model") or not subs:
        raise InputError("a rounds group needs `name`, `rounds` (an integer >= 1), `start_model` and `stages`",
                         file=path, record=where)
    if not all(isinstance(s, dict) and "name" in s and "kind" in s for s in subs):
        raise InputError("every stage of a rounds group needs `name` and `kind`", file=path, record=where)
    trained = [s["name"] for s in subs if s["kind"] in TRAINING_KINDS]
    if not trained:
        raise InputError("a rounds group needs a training stage (dpo, ppo, ...) whose model the next round uses",
                         file=path, record=where)
    out, model_in = [], group["start_model"]
    for r in range(1, rounds + 1):
        names = {s["name"]: f"{group['name']}_r{r}_{s['name']}" for s in subs}

        def placeholder(m: re.Match, names=names, model_in=model_in, r=r) -> str:
            key = m[1]   # a sibling stage -> this round's copy; {model_in}, {round}; anything else stays
            return "{" + names[key] + "}" if key in names else model_in if key == "model_in" \
                else str(r) if key == "round" else m[0]

        def rewrite(v, r=r):
            if isinstance(v, str):
                return r if v.strip() == "{round}" else re.sub(r"\{(\w+)\}", placeholder, v)
            if isinstance(v, dict):
                return {k: rewrite(x) for k, x in v.items()}
            if isinstance(v, list):
                return [rewrite(x) for x in v]
            return v
        out += [{**rewrite(s), "name": names[s["name"]]} for s in subs]
        model_in = "{" + names[trained[-1]] + "}/model"
    return out, f"{group['name']}_r{rounds}_{trained[-1]}"


def resolve(value, variables: dict):
    """Substitute {run}, {seed}, {configs}, {STAGE} in every string (recursively)."""
    if isinstance(value, str):
        try:
            text = value.format_map(variables)
        except KeyError as e:
            raise InputError(f"unknown placeholder {{{e.args[0]}}} in {value!r}",
                             fix="use {run}, {seed}, {configs} or a stage name") from None
        if text.lstrip("-").isdigit() and value.strip().startswith("{") and value.strip().endswith("}"):
            return int(text)   # "{seed}" stays an int
        return text
    if isinstance(value, dict):
        return {k: resolve(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, variables) for v in value]
    return value


def variables(p: Pipeline) -> dict:
    # absolute: LoRA adapters record their base model's path, which must load from anywhere
    run = p.run_dir.resolve()
    v = {"run": str(run), "seed": str(p.seed), "configs": str(CONFIGS_DIR)}
    v.update({s.name: str(run / s.name) for s in p.stages})
    v.update({group: v[final] for group, final in p.aliases.items()})
    return v


# ---------------------------------------------------------------- manifests
def fingerprint(path: Path) -> str:
    """sha256 of a file or a folder's files (names + contents). Files over 64 MiB are hashed by size and
    their first and last MiB, so a multi-GB checkpoint does not cost minutes."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()
                                                 and not p.name.startswith(".") and p.name != "stage.json")
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        size = f.stat().st_size
        with open(f, "rb") as fh:
            if size <= 64 << 20:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
            else:
                h.update(str(size).encode())
                h.update(fh.read(1 << 20))
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()


def stage_inputs(resolved: dict, stage_dir: Path, config_file: str | None) -> dict[str, str]:
    """Every existing path the stage's resolved args name (outside its own folder), with its hash."""
    paths = set()

    def walk(v):
        if isinstance(v, str) and v and len(v) < 4096 and os.path.exists(v):
            paths.add(Path(v))
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(resolved)
    if config_file:
        paths.add(Path(config_file))
    out = {}
    for pth in sorted(paths, key=str):
        if stage_dir.resolve() in (pth.resolve(), *pth.resolve().parents):
            continue
        out[str(pth)] = fingerprint(pth)
    return out


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("halign", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "deepspeed"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def relabel(value, roots: dict[str, str]):
    """`value` with every path under a root written from its placeholder ("/x/runs/demo/sft/model" ->
    "{run}/sft/model"), so that a run copied or moved elsewhere still matches its manifests."""
    if isinstance(value, str):
        for name, root in sorted(roots.items(), key=lambda kv: -len(kv[1])):   # the deepest root first
            if value == root or value.startswith(root + os.sep):
                return name + value[len(root):]
        return value
    if isinstance(value, dict):
        return {relabel(k, roots): relabel(v, roots) for k, v in value.items()}
    if isinstance(value, list):
        return [relabel(v, roots) for v in value]
    return value


def recorded_roots(record: dict, identity: dict, roots: dict[str, str]) -> dict[str, str]:
    """The roots `record` was written under: its own, or, for a record from before they were recorded,
    today's with each root moved to where the record's input paths put it (an input "/old/run/world" beside
    today's "/new/run/world" puts {run} at /old/run), so an older run copied elsewhere still resumes."""
    if record.get("roots"):
        return record["roots"]
    theirs = list(((record.get("identity") or {}).get("inputs") or {}))
    found = dict(roots)
    for name, root in roots.items():
        for path in (identity.get("inputs") or {}):
            if path.startswith(root + os.sep):
                tail = path[len(root):]   # starts with os.sep: "/world" never matches "/x/otherworld"
                old = next((q[:-len(tail)] for q in theirs if q.endswith(tail) and len(q) > len(tail)), None)
                if old:
                    found[name] = old
                    break
    return found


def same_identity(record: dict, identity: dict, roots: dict[str, str]) -> bool:
    """Whether a manifest (or stage.started.json) `record` was written for `identity`. Paths compare relative
    to the run folder and the configs folder each side had (inputs compare by content hash as well, so a
    root found wrongly can only fail to match)."""
    return relabel(record.get("identity"), recorded_roots(record, identity, roots)) == relabel(identity, roots)


def manifest_matches(stage_dir: Path, identity: dict, roots: dict[str, str]) -> bool:
    path = stage_dir / "stage.json"
    if not path.is_file():
        return False
    try:
        m = read_json(path)
    except InputError:
        return False
    return same_identity(m, identity, roots)


# ---------------------------------------------------------------- running
def run_pipeline(p: Pipeline, resume: bool = False, only: str | None = None, start: str | None = None) -> dict:
    """Run the stages in order; returns {stage: manifest}."""
    names = [s.name for s in p.stages]
    if start in p.aliases:   # --from a rounds group: from its first round's first stage
        start = next(n for n in names if n.startswith(f"{start}_r1_"))
    if only:
        p.stage(only)
    if start:
        p.stage(start)
    selected = [only] if only else names[names.index(start):] if start else names
    p.run_dir.mkdir(parents=True, exist_ok=True)
    var = variables(p)
    # identities hold absolute paths (the export's lineage and scripts/dpo_variant.py follow them); they
    # compare relative to these
    roots = {"{run}": var["run"], "{configs}": var["configs"]}
    manifests = {}
    for st in p.stages:
        stage_dir = p.run_dir / st.name
        if st.name not in selected:
            if (stage_dir / "stage.json").is_file():
                manifests[st.name] = read_json(stage_dir / "stage.json")
            continue
        args = resolve(st.args, var)
        config_text = Path(resolve(st.config, var)).read_text() if st.config else None
        identity = {"kind": st.kind, "args": args, "config": st.config, "config_text": config_text,
                    "accelerate_config": st.accelerate_config,
                    "inputs": stage_inputs(args, stage_dir, resolve(st.config, var) if st.config else None)}
        if resume and manifest_matches(stage_dir, identity, roots):
            manifests[st.name] = read_json(stage_dir / "stage.json")
            print(f"[{st.name}] up to date, skipped (--resume)")
            continue
        started = stage_dir / "stage.started.json"
        continue_training = (resume and st.kind in TRAINING_KINDS and started.is_file()
                             and same_identity(read_json(started), identity, roots))
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(started, {"identity": identity, "roots": roots})
        print(f"[{st.name}] {st.kind} ..." + (" (continuing from the last checkpoint)" if continue_training else ""))
        t0 = time.time()
        metrics = run_stage(st, args, stage_dir, p, var, continue_training)
        wall = round(time.time() - t0, 1)
        manifest = {"stage": st.name, "identity": identity, "roots": roots, "outputs": sorted(
            str(q.relative_to(stage_dir)) for q in stage_dir.iterdir() if not q.name.startswith(("stage.", "."))),
            "metrics": metrics, "versions": versions(), "wall_time_s": wall,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(stage_dir / "stage.json", manifest)
        started.unlink(missing_ok=True)
        manifests[st.name] = manifest
        print(f"[{st.name}] done in {wall} s: {one_line(metrics)}")
    return manifests


def one_line(metrics: dict) -> str:
    keep = [(k, v) for k, v in (metrics or {}).items() if isinstance(v, (int, float, str)) and k != "model"]
    return ", ".join(f"{k}={v}" for k, v in keep[:6])


def run_stage(st: Stage, args: dict, stage_dir: Path, p: Pipeline, var: dict, continue_training: bool) -> dict:
    if st.kind in TRAINING_KINDS:
        return run_training_stage(st, args, stage_dir, var, continue_training)
    return STAGE_RUNNERS[st.kind](args, stage_dir, p)


def _argv(config: str | None, args: dict, stage_dir: Path, resume: bool) -> list[str]:
    argv = ["--config", config] if config else []
    for k, v in {**args, "output_dir": str(stage_dir), **({"resume": True} if resume else {})}.items():
        argv += [f"--{k}"] + ([str(x) for x in v] if isinstance(v, list) else [str(v)])
    return argv


def run_training_stage(st: Stage, args: dict, stage_dir: Path, var: dict, resume: bool) -> dict:
    import importlib

    from align.config import parse_config

    config = resolve(st.config, var) if st.config else None
    argv = _argv(config, args, stage_dir, resume)
    if st.accelerate_config:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               resolve(st.accelerate_config, var), "-m", "align", st.kind, *argv]
        print("  $ " + " ".join(cmd))
        rc = subprocess.call(cmd)
        if rc != 0:
            raise InputError(f"stage {st.name!r} failed under accelerate launch (exit {rc})",
                             fix="read the log above; rerun with --resume to continue from the last checkpoint")
        metrics_file = stage_dir / "metrics.json"
        return read_json(metrics_file) if metrics_file.is_file() else {}
    module, cls_name, fn = TRAINING_KINDS[st.kind]
    mod = importlib.import_module(module)
    cfg = parse_config(getattr(mod, cls_name), argv, st.kind)
    return getattr(mod, fn)(cfg)


# ---------------------------------------------------------------- non-training stages
def _synth(args: dict, out: Path, p: Pipeline) -> dict:
    from data_prep.synth import WorldConfig, build_world

    m = build_world(out, WorldConfig(**args))
    return {"hallucination_rate": m["hallucination_rate"], "question_noise_rate": m["question_noise_rate"],
            "sft_rows": m["n_sft_rows"],
            **{f"{k}_images": v["n_images"] for k, v in m["splits"].items()}}


def _tiny_llava(args: dict, out: Path, p: Pipeline) -> dict:
    from align.modeling import load_model, parameter_report
    from align.tiny import TinyLlavaConfig, create_tiny_llava

    args = dict(args)
    world = args.pop("world")
    path = create_tiny_llava(Path(world), out / "model", TinyLlavaConfig(**args))
    report = parameter_report(load_model(str(path)))
    return {"parameters": sum(r["total"] for r in report.values()), "model": str(path)}


def _generate(args: dict, out: Path, p: Pipeline) -> dict:
    from align.generate import generate_command

    generate_command(out=out / "responses.jsonl", **args)
    return {"responses": sum(1 for _ in open(out / "responses.jsonl"))}


def _pairs(args: dict, out: Path, p: Pipeline) -> dict:
    from data_prep.pairs import pairs_command

    pairs_command(out=out / "pairs.jsonl", **args)
    stats = read_json(out / "stats.json")
    per = stats.get("per_strategy", {})
    return {"pairs": stats.get("pairs"), **{f"{k}_pairs": v.get("pairs") for k, v in per.items()},
            **{f"{k}_length_ratio": v.get("length", {}).get("ratio_of_means") for k, v in per.items()}}


def _pope(args: dict, out: Path, p: Pipeline) -> dict:
    from data_prep.pope import pope_command

    pope_command(out=out, **args)
    return {"files": sorted(f.name for f in out.glob("pope_*.jsonl"))}


def _eval(args: dict, out: Path, p: Pipeline) -> dict:
    from align.evaluate import EvalConfig, _build, run_eval

    args = dict(args)
    run_report = args.pop("run_report", True)
    cfg = _build(EvalConfig, {"out": str(out), **args}, "eval stage", None)
    results = run_eval(cfg, report_dir=out, extra={"seed": p.seed, "timings": stage_timings(p)})
    # the run-level copy is the one people read (and the demo completes with every stage's time);
    # later stages (export's model card) read the stage's own copy, which nothing rewrites
    if run_report:
        for name in ("report.json", "report.md", "metrics.png"):
            shutil.copyfile(out / name, p.run_dir / name)
    return {name: {k: r.get(k) for k in ("chair_s", "chair_i", "recall")} for name, r in results.items()}


def _export(args: dict, out: Path, p: Pipeline) -> dict:
    from align.export import export_checkpoint

    return export_checkpoint(out=out, **args)


def stage_timings(p: Pipeline) -> dict:
    out = {}
    for s in p.stages:
        f = p.run_dir / s.name / "stage.json"
        if f.is_file():
            out[s.name] = read_json(f).get("wall_time_s")
    return out


STAGE_RUNNERS = {"synth": _synth, "tiny_llava": _tiny_llava, "generate": _generate, "pairs": _pairs,
                 "pope": _pope, "eval": _eval, "export": _export}


def pipeline(config: Path, resume: bool = False, only: str | None = None, from_stage: str | None = None,
             out: Path | None = None, seed: int | None = None) -> int:
    """Run the stages a pipeline YAML names, in order, each into RUN/STAGE/ with a stage.json manifest.

    Args:
        config: pipeline YAML (name, runs_dir, seed, stages)
        resume: skip stages whose manifest matches their config and inputs; continue interrupted training
        only: run just this stage
        from_stage: run from this stage on
        out: run folder (default: runs_dir/name)
        seed: the {seed} placeholder (default: the YAML's `seed`); give a demo run's --seed to reuse its stages
    """
    p = load_pipeline(config, out, seed=seed)
    run_pipeline(p, resume=resume, only=only, start=from_stage)
    print(f"pipeline {p.name}: done -> {p.run_dir}")
    return 0
