"""scripts/dpo_variant.py's closing summary (what a tuning rule over several seeds is judged on), on
hand-made reports; the replay itself runs in tests/test_demo.py."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("dpo_variant", Path(__file__).resolve().parents[1] / "scripts/dpo_variant.py")
dpo_variant = importlib.util.module_from_spec(spec)
spec.loader.exec_module(dpo_variant)
pytestmark = pytest.mark.unit


def _report(chair_s: float, recall: float, f1: float, ci: tuple | None, error_types=None) -> dict:
    pope = lambda f: {"random": {"accuracy": 0.9}, "adversarial": {"f1": f}}   # noqa: E731
    dpo = {"chair_s": chair_s, "recall": recall, "pope": pope(f1)}
    if error_types:
        dpo["analysis"] = {"error_types": error_types}
    return {"results": {"sft": {"chair_s": 0.40, "recall": 0.86, "pope": pope(0.900)}, "dpo": dpo},
            "changes": {"dpo": {"ci": {"pope_adversarial_f1_delta": {"low": ci[0], "high": ci[1]}}}} if ci else {}}


def test_outcome_by_hand():
    o = dpo_variant.dpo_outcome(_report(0.18, 0.80, 0.905, (-0.004, 0.015),
                                        {"substitutions": 30, "insertions": 10, "deletions": 80}), 200.0)
    assert o["cut"] == 0.55 and o["recall_delta"] == -0.06 and o["pope_adversarial_f1_delta"] == 0.005
    assert o["pope_adversarial_f1_interval"] == [-0.004, 0.015] and o["dpo_seconds"] == 200.0
    [miss] = o["misses"]                                   # 6 recall points lost: the one target missed
    assert miss.startswith("dpo recall fell 0.060")
    assert o["error_types"] == {"substitutions": 30, "insertions": 10, "deletions": 80}


def test_summary_counts_runs_misses_and_f1_losses_outside_the_noise():
    met = dpo_variant.dpo_outcome(_report(0.16, 0.84, 0.905, (-0.004, 0.015)), 210.0)      # every target
    cut_and_f1 = dpo_variant.dpo_outcome(_report(0.24, 0.85, 0.880, (-0.035, -0.002)), 150.0)   # 40 %, F1 -2
    recall = dpo_variant.dpo_outcome(_report(0.18, 0.80, 0.901, (-0.01, 0.012)), 220.0)   # recall -6
    totals, lines = dpo_variant.summarise({"seed0": {"variant": met, "run": cut_and_f1},
                                           "seed1": {"variant": recall, "run": met}})
    assert totals["variant"] == {"runs": 2, "meeting_every_dpo_target": ["seed0"], "dpo_targets_missed": 1,
                                 "f1_interval_below_zero": []}
    assert totals["run"] == {"runs": 2, "meeting_every_dpo_target": ["seed1"], "dpo_targets_missed": 2,
                             "f1_interval_below_zero": ["seed0"]}
    assert lines[1] == ("  seed0: cut 60.0 % (40.0), recall -2.0 (-1.0), POPE-adv F1 +0.5 [-0.4, +1.5] (-2.0), "
                        "subst/ins/del ? (?), DPO 210 s (150 s), 0 missed (2)")
    assert lines[-1] == ("every DPO target met on 1 of 2 runs (1); targets missed 1 (2); POPE-adversarial F1 "
                         "interval wholly below 0: none (seed0)")


def _fake_run(root: Path) -> Path:
    """A finished run's manifests, as far as the replay reads them (no model: the pipeline is only built)."""
    import json
    run = root / "seed4"
    ident = {"samples": {"kind": "generate", "args": {"model": "/r/sft/model", "prompts": "/r/world/p.jsonl",
                                                      "sample": True, "num_samples": 4, "seed": 4}},
             "pairs": {"kind": "pairs", "args": {"annotations": "/r/a.json", "images": "/r/world",
                                                 "responses": "/r/samples/responses.jsonl", "strategy": ["inject"],
                                                 "seed": 4}},
             "dpo": {"kind": "dpo", "config_text": "beta: 0.1\n",
                     "args": {"model_name_or_path": "/r/sft/model", "dataset": "/r/pairs/pairs.jsonl", "seed": 4}},
             "eval": {"kind": "eval", "args": {"checkpoints": {"sft": "/r/sft/model", "dpo": "/r/dpo/model"}}}}
    for stage, identity in ident.items():
        (run / stage).mkdir(parents=True)
        (run / stage / "stage.json").write_text(json.dumps({"stage": stage, "identity": identity}))
    return run


def test_samples_set_samples_again_and_mines_the_pairs_from_the_new_samples(tmp_path):
    run = _fake_run(tmp_path)
    pipeline, _ = dpo_variant.variant_pipeline(run, tmp_path / "out", {}, None, {"correct_only_complete": True},
                                               {"num_samples": 8})
    samples, pairs, dpo, ev = pipeline["stages"]
    assert (samples["name"], samples["kind"], pairs["name"], dpo["name"], ev["name"]) == \
        ("samples", "generate", "pairs", "dpo", "eval")
    assert samples["args"]["num_samples"] == 8 and samples["args"]["model"] == "/r/sft/model"
    assert pairs["args"]["responses"] == "{samples}/responses.jsonl"      # not the run's old samples
    assert pairs["args"]["correct_only_complete"] is True and pairs["args"]["strategy"] == ["inject"]
    assert dpo["args"]["dataset"] == "{pairs}/pairs.jsonl"
    # without --samples-set the run's own samples stay
    pipeline, _ = dpo_variant.variant_pipeline(run, tmp_path / "out", {}, None, {"seed": 5})
    [pairs, _, _] = pipeline["stages"]
    assert pairs["args"]["responses"] == "/r/samples/responses.jsonl"


def test_samples_set_refuses_a_field_generate_does_not_have(tmp_path):
    run = _fake_run(tmp_path)
    with pytest.raises(dpo_variant.InputError, match="'n_samples' is not an argument of the samples stage"):
        dpo_variant.variant_pipeline(run, tmp_path / "out", {}, None, None, {"n_samples": 8})
