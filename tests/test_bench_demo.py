"""scripts/bench_demo.py's target check, on hand-made reports."""
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
