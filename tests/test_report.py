"""Error analysis and the comparison report, on hand-made results."""
import json

import pytest

from align.report import format_table, metric_table, relative_changes, write_report
from reward.analysis import hallucination_analysis

PER_CAPTION = [
    # star present; moon hallucinated 2nd; star repeated 3rd
    {"ground_truth": ["star"], "mentioned": [["star", "star"], ["moon", "moon"], ["star", "star"]]},
    # heart present; diamond hallucinated 1st, moon hallucinated 4th
    {"ground_truth": ["heart", "ring"], "mentioned": [["diamond", "diamond"], ["heart", "heart"],
                                                     ["ring", "ring"], ["moon", "moon"]]},
    {"ground_truth": ["circle"], "mentioned": []},
]


@pytest.mark.unit
def test_hallucination_analysis_counts_by_hand():
    a = hallucination_analysis(PER_CAPTION)
    assert a["most_hallucinated"] == [["moon", 2], ["diamond", 1]]
    # moon was hallucinated next to star (caption 1) and heart+ring (caption 2)
    assert a["co_occurring"]["moon"] == [["heart", 1], ["ring", 1], ["star", 1]]
    assert a["by_position"]["1st"] == {"mentions": 2, "hallucinated": 1, "rate": 0.5}
    assert a["by_position"]["2nd"] == {"mentions": 2, "hallucinated": 1, "rate": 0.5}
    assert a["by_position"]["3rd"] == {"mentions": 2, "hallucinated": 0, "rate": 0.0}
    assert a["by_position"]["4th+"] == {"mentions": 1, "hallucinated": 1, "rate": 1.0}
    # moon added beside star; diamond and moon added beside heart and ring; circle left out
    assert a["error_types"] == {"substitutions": 0, "insertions": 3, "deletions": 1}


@pytest.mark.unit
def test_error_types_tell_a_misrecognised_object_from_an_added_one():
    per_caption = [
        # a moon named as a star: one substitution (the star stands where the moon should be)
        {"ground_truth": ["arrow", "diamond", "moon"],
         "mentioned": [["star", "star"], ["diamond", "diamond"], ["arrow", "arrow"]]},
        # one wrong object, two left out: one substitution and one deletion; a repeat counts once
        {"ground_truth": ["moon", "ring"], "mentioned": [["star", "star"], ["stars", "star"]]},
        # two objects added beside the only present one
        {"ground_truth": ["star"], "mentioned": [["star", "star"], ["moon", "moon"], ["heart", "heart"]]},
    ]
    assert hallucination_analysis(per_caption)["error_types"] == {
        "substitutions": 2, "insertions": 2, "deletions": 1}


RESULTS = {
    "sft": {"chair_s": 0.40, "chair_i": 0.20, "recall": 0.80,
            "pope": {"adversarial": {"accuracy": 0.70, "f1": 0.60, "yes_ratio": 0.5}}},
    "dpo": {"chair_s": 0.10, "chair_i": 0.05, "recall": 0.78,
            "pope": {"adversarial": {"accuracy": 0.75, "f1": 0.70, "yes_ratio": 0.45}}},
}


@pytest.mark.unit
def test_relative_changes_by_hand():
    d = relative_changes(RESULTS, "sft")["dpo"]
    assert d["chair_s_relative"] == pytest.approx(-0.75)      # (0.10 - 0.40) / 0.40
    assert d["chair_i_relative"] == pytest.approx(-0.75)
    assert d["recall_delta"] == pytest.approx(-0.02)
    assert d["pope_adversarial_f1_delta"] == pytest.approx(0.10)


@pytest.mark.unit
def test_table_rows_are_percentages():
    header, rows = metric_table(RESULTS)
    assert header[:4] == ["checkpoint", "CHAIR_s", "CHAIR_i", "Recall"]
    assert rows[0][:4] == ["sft", "40.0", "20.0", "80.0"] and rows[1][:4] == ["dpo", "10.0", "5.0", "78.0"]
    md = format_table(header, rows, markdown=True).splitlines()
    assert md[0].startswith("| checkpoint") and set(md[1]) <= {"|", "-"}


@pytest.mark.unit
def test_write_report_files(tmp_path):
    write_report(tmp_path, RESULTS, {"seed": 7, "timings": {"sft": 1.5}})
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["seed"] == 7 and report["results"]["dpo"]["chair_s"] == 0.10
    assert report["changes"]["dpo"]["chair_s_relative"] == pytest.approx(-0.75)
    assert (tmp_path / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "CHAIR_s -75.0% relative" in (tmp_path / "report.md").read_text()


@pytest.mark.unit
def test_write_report_keeps_and_prints_the_intervals(tmp_path):
    ci = {"dpo": {"chair_s_relative": {"delta": -0.75, "low": -0.9, "high": -0.6, "level": 0.95},
                  "pope_adversarial_f1_delta": {"delta": 0.1, "low": -0.012, "high": 0.2, "level": 0.95}}}
    write_report(tmp_path, RESULTS, {}, intervals=ci)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["changes"]["dpo"]["ci"]["chair_s_relative"]["low"] == -0.9
    md = (tmp_path / "report.md").read_text()
    assert "CHAIR_s -75.0% relative [-90.0, -60.0]" in md
    assert "recall -2.0 points," in md                      # no interval given for recall: none printed
    assert "POPE-adversarial F1 +10.0 [-1.2, +20.0]" in md and "paired bootstrap" in md


@pytest.mark.unit
def test_write_report_prints_the_error_types(tmp_path):
    results = {name: dict(r, analysis=hallucination_analysis(PER_CAPTION)) for name, r in RESULTS.items()}
    write_report(tmp_path, results, {})
    md = (tmp_path / "report.md").read_text()
    assert "## Error analysis: dpo" in md
    assert "(likely misrecognised): 0; added beside every present one (often the language prior): 3;" in md
    assert "nothing in their place: 1." in md
