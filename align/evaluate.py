"""Benchmark runs: `halign eval run --config FILE`.

For every checkpoint named in the config: greedy captioning of the benchmark images scored with CHAIR
(CHAIR_s, CHAIR_i, recall) and AMBER-style coverage/Hal, POPE in every setting given, the error analysis
(most hallucinated objects, their co-occurring present objects, rate by position), and generation
throughput with its vision / prefill / decode split. Writes per checkpoint `OUT/NAME/results.json` (+ the
generations), then `OUT/report.md`, `OUT/report.json` and `OUT/metrics.png` comparing all checkpoints.

Config (YAML; unknown keys are errors):
    out: runs/demo/eval
    checkpoints: {sft: runs/demo/sft/model, dpo: runs/demo/dpo/model}
    chair: {prompts: world/prompts_eval.jsonl, annotations: world/instances_eval.json,
            gt_captions: world/captions_eval.json, vocab: shapes, mode: reference}
    pope: {questions: {random: pope/pope_random.jsonl, ...}, parse: reference}
    generation: {batch_size: 64, max_new_tokens: 48, seed: 0}
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from reward.files import InputError, read_json, read_records, write_json, write_jsonl


@dataclass
class ChairBenchmark:
    prompts: str
    annotations: str
    gt_captions: str | None = None
    images_dir: str | None = None
    vocab: str = "coco"
    mode: str = "reference"


@dataclass
class PopeBenchmark:
    questions: dict[str, str]
    images_dir: str | None = None
    parse: str = "reference"
    max_new_tokens: int = 8


@dataclass
class GenerationSettings:
    batch_size: int = 64
    max_new_tokens: int = 64
    seed: int = 0


@dataclass
class EvalConfig:
    out: str
    checkpoints: dict[str, str]
    chair: ChairBenchmark | None = None
    pope: PopeBenchmark | None = None
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    trust_remote_code: bool = False


def _build(cls, data, where: str, file):
    """Nested dataclass from a YAML mapping, naming unknown or missing keys."""
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping", file=file)
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r} in {where}", file=file,
                         fix=f"allowed keys: {', '.join(names)}")
    kwargs = {}
    for k, v in data.items():
        sub = {"chair": ChairBenchmark, "pope": PopeBenchmark, "generation": GenerationSettings}.get(k)
        kwargs[k] = _build(sub, v, f"{where}.{k}", file) if sub and cls is EvalConfig and v is not None else v
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise InputError(f"{where}: {e}", file=file, fix="add the missing key") from None


def load_eval_config(path: str | Path) -> EvalConfig:
    path = Path(path)
    if not path.is_file():
        raise InputError("eval config not found", file=path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InputError(f"malformed YAML ({e})", file=path) from None
    cfg = _build(EvalConfig, data or {}, "config", path)
    if not cfg.checkpoints:
        raise InputError("no checkpoints to evaluate", file=path, fix="list them under `checkpoints:`")
    if cfg.chair is None and cfg.pope is None:
        raise InputError("no benchmark configured", file=path, fix="add a `chair:` and/or `pope:` section")
    return cfg


# ---------------------------------------------------------------- one checkpoint
def evaluate_model(model, processor, cfg: EvalConfig, out_dir: Path, ground_truth=None) -> dict:
    """Run every configured benchmark with an already-loaded model; write generations under out_dir."""
    from align.generate import generate_responses, read_prompts
    from reward.analysis import hallucination_analysis
    from reward.chair import chair_scores
    from reward.grounded import amber_metrics
    from reward.pope import pope_metrics

    g = cfg.generation
    results: dict = {"timings": {}}
    if cfg.chair:
        c = cfg.chair
        records = read_prompts(c.prompts, c.images_dir)
        rows, timings = generate_responses(model, processor, records, batch_size=g.batch_size,
                                           max_new_tokens=g.max_new_tokens, seed=g.seed, desc="eval/captions")
        write_jsonl(out_dir / "captions.jsonl", rows)
        truth = ground_truth if ground_truth is not None else chair_ground_truth(c)
        chair = chair_scores(rows, truth, c.vocab, c.mode)
        write_json(out_dir / "chair.json", chair)
        amber = amber_metrics(rows, truth, c.vocab)
        results.update(chair_s=chair["chair_s"], chair_i=chair["chair_i"], recall=chair["recall"],
                       n_captions=chair["n_captions"], n_mentions=chair["n_mentions"],
                       n_hallucinated=chair["n_hallucinated"], amber=amber,
                       mean_response_words=round(sum(len(r["response"].split()) for r in rows) / len(rows), 2),
                       analysis=hallucination_analysis(chair["per_caption"]))
        results["timings"]["captions"] = timings.as_dict()
    if cfg.pope:
        p = cfg.pope
        results["pope"] = {}
        for setting, qfile in p.questions.items():
            questions = read_records(qfile, "POPE questions file")
            records = read_prompts(qfile, p.images_dir)
            rows, timings = generate_responses(model, processor, records, batch_size=g.batch_size,
                                               max_new_tokens=p.max_new_tokens, seed=g.seed,
                                               desc=f"eval/pope-{setting}")
            answers = [{"question_id": r["question_id"], "answer": r["response"]} for r in rows]
            write_jsonl(out_dir / f"pope_{setting}_answers.jsonl", answers)
            for q in questions:
                q.setdefault("setting", setting)
            scored = pope_metrics(questions, {a["question_id"]: a["answer"] for a in answers}, p.parse)
            metrics = next(iter(scored["settings"].values()))
            results["pope"][setting] = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
            results["timings"][f"pope_{setting}"] = timings.as_dict()
        results["pope_policy"] = p.parse
        if results["pope"]:
            results["pope_average_f1"] = round(sum(m["f1"] for m in results["pope"].values())
                                               / len(results["pope"]), 4)
    return results


def chair_ground_truth(c: ChairBenchmark) -> dict:
    from reward.chair import ground_truth_from_coco

    instances = read_json(c.annotations, "COCO instances file")
    captions = read_json(c.gt_captions, "COCO captions file") if c.gt_captions else None
    return ground_truth_from_coco(instances, captions, c.vocab, c.mode)


def evaluate_checkpoint(name: str, path: str, cfg: EvalConfig, ground_truth=None) -> dict:
    from align.modeling import check_model_processor, load_model, load_processor

    model = load_model(path, cfg.trust_remote_code)
    processor = load_processor(path, cfg.trust_remote_code)
    check_model_processor(model, processor, path)
    out_dir = Path(cfg.out) / name
    t0 = time.time()
    results = evaluate_model(model, processor, cfg, out_dir, ground_truth)
    results.update(checkpoint=str(path), seconds=round(time.time() - t0, 1))
    write_json(out_dir / "results.json", results)
    return results


def run_eval(cfg: EvalConfig, report_dir: str | Path | None = None, extra: dict | None = None) -> dict:
    """Evaluate every checkpoint, then write the comparison report (into report_dir, default cfg.out).
    Returns {name: results}."""
    from align.report import host_info, write_report

    truth = chair_ground_truth(cfg.chair) if cfg.chair else None
    all_results = {}
    for name, path in cfg.checkpoints.items():
        all_results[name] = evaluate_checkpoint(name, path, cfg, truth)
        print(summary_line(name, all_results[name]))
    write_report(Path(report_dir or cfg.out), all_results, {"host": host_info(), **(extra or {})},
                 intervals=change_intervals_of(cfg))
    return all_results


def change_intervals_of(cfg: EvalConfig, base: str | None = None) -> dict:
    """Paired bootstrap intervals of every checkpoint's changes against the base (the first checkpoint),
    from the per-item outcomes each evaluated checkpoint wrote under cfg.out."""
    from reward.significance import change_intervals, chair_outcomes, pope_outcomes

    names = list(cfg.checkpoints)
    base = base or names[0]
    if len(names) < 2:
        return {}
    questions = {s: read_records(q, "POPE questions file") for s, q in cfg.pope.questions.items()} \
        if cfg.pope else {}

    def outcomes(name: str) -> dict:
        d = Path(cfg.out) / name
        o = {"chair": chair_outcomes(read_json(d / "chair.json")["per_caption"])} if cfg.chair else {}
        if cfg.pope:
            o["pope"] = {}
            for setting, qs in questions.items():
                answers = {r["question_id"]: r["answer"] for r in read_records(d / f"pope_{setting}_answers.jsonl")}
                o["pope"][setting] = pope_outcomes(qs, answers, cfg.pope.parse)
        return o

    b = outcomes(base)
    return {name: change_intervals(b, outcomes(name), seed=cfg.generation.seed) for name in names if name != base}


def summary_line(name: str, r: dict) -> str:
    parts = [f"{name:>8}:"]
    if "chair_s" in r:
        parts.append(f"CHAIR_s {100 * r['chair_s']:.1f}  CHAIR_i {100 * r['chair_i']:.1f}  "
                     f"recall {100 * r['recall']:.1f}")
    for s, m in r.get("pope", {}).items():
        parts.append(f"POPE-{s} acc {100 * m['accuracy']:.1f} F1 {100 * m['f1']:.1f}")
    return "  ".join(parts)


def run_command(config: Path) -> int:
    """Generate with every checkpoint named in an eval config and score every benchmark it names.

    Writes OUT/NAME/results.json per checkpoint and OUT/report.md, report.json, metrics.png comparing them.

    Args:
        config: eval YAML (out, checkpoints, chair, pope, generation)
    """
    cfg = load_eval_config(config)
    run_eval(cfg)
    print(f"report -> {Path(cfg.out) / 'report.md'}")
    return 0
