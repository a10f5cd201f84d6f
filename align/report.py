"""The comparison report across evaluated checkpoints: a table (terminal + report.md), report.json, plots."""
from __future__ import annotations

import shutil
from pathlib import Path

from reward.files import atomic_path, write_json, write_text

COLUMNS = [("CHAIR_s", "chair_s", True), ("CHAIR_i", "chair_i", True), ("Recall", "recall", False)]


def _pct(v) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) else "–"


def metric_table(results: dict) -> tuple[list[str], list[list[str]]]:
    settings = []
    for r in results.values():
        for s in r.get("pope", {}):
            if s not in settings:
                settings.append(s)
    header = ["checkpoint"] + [c[0] for c in COLUMNS] + ["Cover", "Hal"]
    for s in settings:
        header += [f"POPE-{s[:3]} acc", "F1", "yes"]
    header.append("img/s")
    rows = []
    for name, r in results.items():
        row = [name] + [_pct(r.get(key)) for _, key, _ in COLUMNS]
        amber = r.get("amber", {})
        row += [_pct(amber.get("cover")), _pct(amber.get("hal"))]
        for s in settings:
            m = r.get("pope", {}).get(s, {})
            row += [_pct(m.get("accuracy")), _pct(m.get("f1")), _pct(m.get("yes_ratio"))]
        ips = r.get("timings", {}).get("captions", {}).get("images_per_s")
        row.append(f"{ips:.0f}" if ips else "–")
        rows.append(row)
    return header, rows


def format_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    if markdown:
        line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] +
                         [line(r) for r in rows])
    line = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in rows])


def relative_changes(results: dict, base: str) -> dict:
    """Each checkpoint against `base`: relative CHAIR_s change, recall and POPE F1 differences."""
    if base not in results or "chair_s" not in results[base]:
        return {}
    b = results[base]
    out = {}
    for name, r in results.items():
        if name == base or "chair_s" not in r:
            continue
        d = {"chair_s_relative": round((r["chair_s"] - b["chair_s"]) / b["chair_s"], 4) if b["chair_s"] else None,
             "chair_i_relative": round((r["chair_i"] - b["chair_i"]) / b["chair_i"], 4) if b["chair_i"] else None,
             "recall_delta": round(r["recall"] - b["recall"], 4)}
        for s, m in r.get("pope", {}).items():
            if s in b.get("pope", {}):
                d[f"pope_{s}_f1_delta"] = round(m["f1"] - b["pope"][s]["f1"], 4)
        out[name] = d
    return out


def plot_metrics(results: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, keys = [], []
    for label, key, _ in COLUMNS:
        labels.append(label)
        keys.append((key, None))
    settings = sorted({s for r in results.values() for s in r.get("pope", {})},
                      key=["random", "popular", "adversarial"].index if all(
                          s in ("random", "popular", "adversarial") for r in results.values()
                          for s in r.get("pope", {})) else str)
    for s in settings:
        labels.append(f"POPE-{s} F1")
        keys.append(("pope", s))
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 4))
    width = 0.8 / max(1, len(results))
    for i, (name, r) in enumerate(results.items()):
        vals = [100 * (r.get(k, 0) if s is None else r.get("pope", {}).get(s, {}).get("f1", 0)) for k, s in keys]
        bars = ax.bar([x + i * width for x in range(len(labels))], vals, width, label=name)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(labels))], labels)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("Hallucination (CHAIR: lower is better) and POPE F1 (higher is better)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def host_info() -> dict:
    """The machine a run's figures come from. CPUs with other vector units (AVX2, AVX-512) take other
    floating-point kernels, so one seed draws other numbers on them: identical runs repeat only on alike
    hosts, and a wall time is only comparable to another taken on the same kind of CPU."""
    import importlib.metadata
    import platform

    import torch

    cpu = platform.machine()     # not platform.processor(): on Linux it runs `uname -p` in a subprocess
    try:   # the marketing name, where Linux gives one
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for package in ("transformers", "trl", "peft", "accelerate", "numpy", "pillow"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "versions": versions}


def host_line(host: dict) -> str:
    return (f"host: {host.get('cpu')} ({host.get('cpu_capability')}), {host.get('threads')} threads, "
            f"torch {host.get('torch')}")


def write_report(out_dir: Path, results: dict, extra: dict, base: str | None = None,
                 figures: dict[str, Path] | None = None, intervals: dict | None = None) -> dict:
    """report.json ({"results": ..., **extra}), report.md (table + analysis), metrics.png, and any
    `figures` ({title: png}) copied next to the report and shown in it (e.g. PPO's reward/KL curves).
    `intervals`: {checkpoint: {change: {"low", "high", ...}}} (reward.significance), kept under each
    checkpoint's changes as "ci" and printed beside them."""
    out_dir = Path(out_dir)
    base = base or next(iter(results), None)
    header, rows = metric_table(results)
    changes = relative_changes(results, base) if base else {}
    for name, ci in (intervals or {}).items():
        if name in changes and ci:
            changes[name]["ci"] = ci
    report = {"results": results, "relative_to": base, "changes": changes, **extra}
    write_json(out_dir / "report.json", report)
    plot_metrics(results, out_dir / "metrics.png")
    md = ["# halign evaluation report", "",
          "Rates in %. CHAIR_s/CHAIR_i/Hal: lower is better; recall/Cover/POPE: higher is better. "
          f"POPE answers parsed with the `{next((r.get('pope_policy') for r in results.values() if r.get('pope_policy')), 'reference')}` policy.",
          "", format_table(header, rows, markdown=True), ""]
    for name, d in changes.items():
        md.append(f"- **{name}** vs {base}: " + change_summary(d))
    if any("ci" in d for d in changes.values()):
        level = next(iter(next(d["ci"] for d in changes.values() if d.get("ci")).values()))["level"]
        md.append(f"\nIn brackets: the {100 * level:.0f} % paired bootstrap interval of each change "
                  "(benchmark items re-drawn with replacement, both checkpoints scored on the same draw). "
                  "An interval that holds 0 is a change the benchmark cannot tell from noise.")
    if extra.get("host"):
        md.append("\n" + host_line(extra["host"]) + " (figures repeat exactly on alike CPUs only)")
    md += ["", "![metrics](metrics.png)", ""]
    for title, png in (figures or {}).items():
        if Path(png).is_file():
            name = f"{Path(png).parent.name}_{Path(png).name}"
            shutil.copyfile(png, out_dir / name)
            md += [f"## {title}", "", f"![{title}]({name})", ""]
    for name, r in results.items():
        a = r.get("analysis")
        if not a:
            continue
        md.append(f"## Error analysis: {name}")
        md.append("Most hallucinated objects (next to which present objects): " + "; ".join(
            f"{o} ×{n} ({', '.join(p for p, _ in a['co_occurring'].get(o, [])[:3])})"
            for o, n in a["most_hallucinated"][:5]) if a["most_hallucinated"] else "No hallucinated object.")
        md.append("Hallucination rate by mention position: " + ", ".join(
            f"{b} {100 * v['rate']:.1f}% of {v['mentions']}" for b, v in a["by_position"].items()))
        e = a.get("error_types")
        if e:   # absent from reports written before it was counted
            md.append(f"Hallucinated objects named in place of a present one the caption leaves out "
                      f"(likely misrecognised): {e['substitutions']}; added beside every present one (often the "
                      f"language prior): {e['insertions']}; present objects left out with nothing in their place: "
                      f"{e['deletions']}.")
        t = r.get("timings", {}).get("captions")
        if t:
            md.append(f"Generation: {t['images_per_s']} images/s (vision {t['vision_s']} s, prefill "
                      f"{t['prefill_s']} s, decode {t['decode_s']} s for {t['images']} images).")
        md.append("")
    if extra.get("timings"):
        md.append("## Stage wall times (s)")
        md.append(", ".join(f"{k} {v}" for k, v in extra["timings"].items()))
        md.append("")
    write_text(out_dir / "report.md", "\n".join(md))
    print(format_table(header, rows))
    return report


def change_summary(d: dict) -> str:
    """"CHAIR_s -60.0% relative [-70.1, -49.6], recall -1.7 points [...], POPE-random F1 +0.2 [...], ..."""
    ci = d.get("ci", {})

    def bracket(key: str) -> str:
        c = ci.get(key)
        return f" [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]" if c else ""

    return (f"CHAIR_s {_signed_pct(d['chair_s_relative'])} relative{bracket('chair_s_relative')}, "
            f"recall {100 * d['recall_delta']:+.1f} points{bracket('recall_delta')}"
            + "".join(f", POPE-{k[5:-9]} F1 {100 * v:+.1f}{bracket(k)}" for k, v in d.items()
                      if k.startswith("pope_") and k.endswith("_f1_delta")))


def _signed_pct(v) -> str:
    return "–" if v is None else f"{100 * v:+.1f}%"
