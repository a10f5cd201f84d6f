"""The demo's target check (align.demo.check_targets, which scripts/bench_demo.py makes over several
seeds), on hand-made reports and runs."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_demo", Path(__file__).resolve().parents[1] / "scripts/bench_demo.py")
bench_demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_demo)


def _report(dpo_f1: float, ci: dict | None) -> dict:
    pope = lambda f1: {"random": {"accuracy": 0.9}, "adversarial": {"f1": f1}}   # noqa: E731
    return {"results": {"sft": {"chair_s": 0.30, "recall": 0.85, "pope": pope(0.880)},
                        "dpo": {"chair_s": 0.12, "recall": 0.84, "pope": pope(dpo_f1)}},
            "changes": {"dpo": {"ci": ci}} if ci else {}}


@pytest.mark.unit
def test_targets_met_means_no_miss():
    assert bench_demo.check(_report(0.885, None), wall=500, quick=False) == []


@pytest.mark.unit
def test_a_miss_names_its_interval_and_whether_it_reaches_the_target():
    noise = {"pope_adversarial_f1_delta": {"low": -0.013, "high": 0.009}}
    real = {"pope_adversarial_f1_delta": {"low": -0.049, "high": -0.016}}
    [miss] = bench_demo.check(_report(0.878, noise), wall=500, quick=False)
    assert "0.878 < SFT's 0.880" in miss and "[-1.3, +0.9]: within noise of the target" in miss
    [miss] = bench_demo.check(_report(0.848, real), wall=500, quick=False)
    assert "[-4.9, -1.6])" in miss and "within noise" not in miss
    assert bench_demo.check(_report(0.885, None), wall=650, quick=False) == ["wall 650 s >= 600 s"]


@pytest.mark.unit
def test_the_summary_counts_the_seeds_that_met_every_target_and_groups_misses_by_target():
    noise = {"pope_adversarial_f1_delta": {"low": -0.013, "high": 0.009}}
    misses = {0: bench_demo.check(_report(0.885, None), wall=500, quick=False),
              4: bench_demo.check(_report(0.878, noise), wall=500, quick=False),
              5: bench_demo.check(_report(0.870, None), wall=621, quick=False),
              8: ["demo run failed"]}
    assert bench_demo.summarize(misses) == [
        "every target met on 1 of 4 seeds (0)",
        "  missed dpo POPE-adversarial F1: seeds 4, 5",
        "  missed wall: seed 5",
        "  missed demo run failed: seed 8",
    ]
    assert bench_demo.summarize({1: ["wall 650 s >= 600 s"]})[0] == "every target met on 0 of 1 seeds"


@pytest.mark.unit
def test_a_bench_prints_the_summary_writes_bench_json_and_exits_1_on_a_miss(tmp_path, monkeypatch, capsys):
    import json
    import subprocess
    import sys

    def fake_demo(cmd, **kwargs):        # stands in for `python -m align demo --out DIR --seed N`
        out, seed = Path(cmd[cmd.index("--out") + 1]), int(cmd[cmd.index("--seed") + 1])
        if seed == 2:
            return subprocess.CompletedProcess(cmd, 1, "", "Traceback: boom")
        out.mkdir(parents=True)
        report = _report(0.885 if seed == 0 else 0.870, None)
        for r in report["results"].values():     # the fields the per-checkpoint line prints
            r["chair_i"] = r["chair_s"] / 2
            r["pope"]["popular"] = {"accuracy": 0.9}
            r["pope"]["adversarial"]["accuracy"] = 0.9
            r["analysis"] = {"error_types": {"substitutions": 7, "insertions": 3 + seed, "deletions": 1}}
        (out / "report.json").write_text(json.dumps(report))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(bench_demo.subprocess, "run", fake_demo)
    monkeypatch.setattr(sys, "argv", ["bench_demo.py", "--seeds", "0", "1", "2", "--out", str(tmp_path)])
    assert bench_demo.main() == 1
    printed = capsys.readouterr().out
    assert "adv F1 88.5  subst/ins 7/3" in printed and "subst/ins 7/4" in printed
    assert "every target met on 1 of 3 seeds (0)" in printed and "seed 2: demo failed (exit 1)" in printed
    bench = json.loads((tmp_path / "bench.json").read_text())
    assert bench["seeds"]["0"]["misses"] == [] and bench["seeds"]["2"] == {"wall_s": None,
                                                                          "misses": ["demo run failed"]}
    assert bench["seeds"]["1"]["misses"] == ["dpo POPE-adversarial F1 0.870 < SFT's 0.880"]
    assert bench["summary"][1:] == ["  missed dpo POPE-adversarial F1: seed 1", "  missed demo run failed: seed 2"]
    # the host the walls were measured on: figures and walls compare only between alike CPUs
    import torch
    assert bench["host"]["torch"] == torch.__version__ and bench["host"]["threads"] == torch.get_num_threads()
    assert bench["host"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and bench["host"]["cpu"]
    import transformers
    assert bench["host"]["versions"]["transformers"] == transformers.__version__
    assert printed.startswith(f"host: {bench['host']['cpu']} ({torch.backends.cpu.get_cpu_capability()})")


@pytest.mark.unit
def test_the_demo_prints_the_targets_its_run_missed(capsys):
    """`halign demo` (full) ends with the same check the bench makes, so a user sees whether the run shows
    what the demo is for."""
    from align.demo import check_targets, print_targets

    assert bench_demo.check is check_targets
    report = _report(0.885, None)
    report["results"]["sft"]["chair_s"] = 0.127          # a run whose SFT model hallucinates too little
    misses = check_targets(report, wall=945, quick=False)
    assert misses[:2] == ["wall 945 s >= 600 s", "SFT CHAIR_s 0.127 < 0.20"]
    print_targets(misses)
    out = capsys.readouterr().out
    assert out.startswith("issue 2's targets missed by this run: wall 945 s >= 600 s; SFT CHAIR_s 0.127 < 0.20")
    assert "another --seed, or another CPU, draws another model" in out
    assert "scripts/bench_demo.py --seeds 0 1 2 ... checks each target's mean over seeds" in out
    print_targets(check_targets(_report(0.885, None), wall=500, quick=False))
    assert capsys.readouterr().out == "issue 2's targets: every one met\n"


@pytest.mark.unit
def test_a_full_demo_checks_its_targets_on_the_stages_own_wall_times(tmp_path, monkeypatch, capsys):
    """align.demo.demo on a finished run (the pipeline stubbed out, as a --resume that skips every stage):
    the wall it checks is the sum of the stages' recorded times, not this invocation's few seconds."""
    import json

    import align.pipeline
    from align.demo import DEMO_DIR, demo
    from align.pipeline import load_pipeline

    stages = [s.name for s in load_pipeline(DEMO_DIR / "pipeline.yaml", out=tmp_path, seed=0).stages]
    for name in stages:
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / name / "stage.json").write_text(json.dumps({"stage": name, "wall_time_s": 60.0}))
    setting = lambda acc, f1: {"accuracy": acc, "f1": f1, "yes_ratio": 0.5}   # noqa: E731
    result = lambda chair_s, f1: {"chair_s": chair_s, "chair_i": chair_s / 2, "recall": 0.85,   # noqa: E731
                                  "pope": {s: setting(0.9, f1) for s in ("random", "popular", "adversarial")}}
    (tmp_path / "eval" / "report.json").write_text(json.dumps(
        {"results": {"sft": result(0.127, 0.88), "dpo": result(0.05, 0.89)}}))
    monkeypatch.setattr(align.pipeline, "run_pipeline", lambda p, resume=False: None)

    assert demo(out=tmp_path, seed=0, quick=False, resume=True) == 0
    printed = capsys.readouterr().out
    wall = 60 * len(stages)
    assert f"issue 2's targets missed by this run: wall {wall} s >= 600 s; SFT CHAIR_s 0.127 < 0.20" in printed
    assert json.loads((tmp_path / "report.json").read_text())["host"]["cpu"]


def _run(recall: float, dpo_f1: float, seed: int) -> dict:
    """A finished run's report: SFT recall 0.85 and POPE-adversarial F1 0.880; DPO cuts CHAIR_s 0.30 -> 0.12."""
    report = _report(dpo_f1, None)
    report["results"]["dpo"]["recall"] = recall
    report["seed"], report["timings"] = seed, {"sft": 300.0, "dpo": 100.5}
    return report


@pytest.mark.unit
def test_across_seeds_averages_each_target_with_a_t_interval_and_says_whether_it_holds():
    from align.demo import across_seeds, format_across_seeds

    # DPO recall change over three seeds: -4, -6, -5 points -> mean -5, sd 1, t(2) 4.303: [-7.48, -2.52],
    # across the -5 target; F1 change +0.5, +0.3, +0.7 -> mean +0.5, sd 0.2: [+0.003, +0.997], above 0
    runs = {0: _run(0.81, 0.885, 0), 1: _run(0.79, 0.883, 1), 2: _run(0.80, 0.887, 2)}
    rows = {r["target"]: r for r in across_seeds(runs)}
    recall = rows["dpo recall change (points)"]
    assert recall["mean"] == pytest.approx(-5.0) and recall["least"] == pytest.approx(-5.0)
    assert recall["low"] == pytest.approx(-5 - 4.303 / 3 ** 0.5) and recall["verdict"] == "undecided"
    assert recall["met"] == 2 and recall["seeds"] == [0, 1, 2]      # -4 and -5 meet it, -6 does not
    f1 = rows["dpo POPE-adversarial F1 change (points)"]
    assert f1["low"] == pytest.approx(0.5 - 4.303 * 0.2 / 3 ** 0.5) and f1["verdict"] == "holds" and f1["met"] == 3
    cut = rows["dpo CHAIR_s cut (%)"]
    assert cut["mean"] == pytest.approx(60.0) and cut["sd"] == pytest.approx(0.0) and cut["verdict"] == "holds"
    assert rows["SFT CHAIR_s (%)"]["verdict"] == "holds"
    runs[1]["results"]["sft"]["chair_s"] = runs[0]["results"]["sft"]["chair_s"] = 0.10   # too little, twice
    runs[2]["results"]["sft"]["chair_s"] = 0.12
    assert {r["target"]: r for r in across_seeds(runs)}["SFT CHAIR_s (%)"]["verdict"] == "fails"
    line = [ln for ln in format_across_seeds(across_seeds(runs)) if "dpo recall" in ln][0]
    assert line == ("  dpo recall change (points) -5.0 [-7.5, -2.5] over 3 seeds, target >= -5.0: undecided "
                    "(met on 2 of 3)")


@pytest.mark.unit
def test_a_bench_of_finished_runs_reads_their_reports_and_prints_the_means(tmp_path, monkeypatch, capsys):
    import json
    import sys

    for seed, (recall, f1) in enumerate([(0.81, 0.885), (0.79, 0.883), (0.80, 0.887)]):
        run = tmp_path / f"run{seed}"
        run.mkdir()
        report = _run(recall, f1, seed)
        for r in report["results"].values():     # the fields the per-checkpoint line prints
            r["chair_i"] = r["chair_s"] / 2
            r["pope"]["popular"] = {"accuracy": 0.9}
            r["pope"]["adversarial"]["accuracy"] = 0.9
        (run / "report.json").write_text(json.dumps(report))
    monkeypatch.setattr(bench_demo.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was re-run"))
    monkeypatch.setattr(sys, "argv", ["bench_demo.py", "--reports", *(str(tmp_path / f"run{s}") for s in range(3)),
                                      "--out", str(tmp_path / "bench")])
    assert bench_demo.main() == 1                       # seed 1's recall fell 0.06
    printed = capsys.readouterr().out
    assert "seed 0: wall 400 s; all targets met" in printed
    assert "seed 1: wall 400 s; MISSED: dpo recall fell 0.060" in printed
    assert ("  dpo POPE-adversarial F1 change (points) +0.5 [+0.0, +1.0] over 3 seeds, target >= +0.0: holds "
            "(met on 3 of 3)") in printed
    bench = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert {r["target"]: r["verdict"] for r in bench["across_seeds"]}["dpo recall change (points)"] == "undecided"
    monkeypatch.setattr(sys, "argv", ["bench_demo.py", "--reports", str(tmp_path / "none")])
    with pytest.raises(SystemExit, match="no report.json: pass a finished demo run folder"):
        bench_demo.main()
