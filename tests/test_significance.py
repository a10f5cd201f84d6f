"""Paired bootstrap intervals of a checkpoint's change, on hand-made outcomes."""
import numpy as np
import pytest

from reward.chair import chair_scores
from reward.pope import pope_metrics
from reward.significance import (change_intervals, chair_outcomes, chair_s_relative, f1_delta, paired_bootstrap,
                                 paired_rows, pope_outcomes, recall_delta, seed_mean_interval, t95)


def _chair_rows(hallucinating: set[int], n: int = 100) -> dict:
    """image id -> (hallucinates, 1 of 2 ground-truth objects mentioned, 2)."""
    return {i: (float(i in hallucinating), 1, 2) for i in range(n)}


@pytest.mark.unit
def test_no_change_gives_a_zero_interval():
    base = _chair_rows(set(range(30)))
    b, n = paired_rows(base, base)
    ci = paired_bootstrap(chair_s_relative, b, n)
    assert ci["delta"] == 0 and ci["low"] == 0 and ci["high"] == 0 and ci["level"] == 0.95


@pytest.mark.unit
def test_pairing_sees_a_change_that_only_removes_hallucinations():
    # base hallucinates on images 0-29, new on 0-19 only: CHAIR_s 0.30 -> 0.20, -1/3 relative
    b, n = paired_rows(_chair_rows(set(range(30))), _chair_rows(set(range(20))))
    ci = paired_bootstrap(chair_s_relative, b, n, seed=1)
    assert ci["delta"] == pytest.approx(-1 / 3, abs=1e-4)
    # every resample keeps new <= base and almost surely draws a fixed image: the interval is below 0
    assert ci["low"] < ci["delta"] < ci["high"] < 0
    # two separate 95 % intervals of 0.30 and 0.20 on 100 images overlap widely (each +-0.09); the paired
    # interval of the difference does not reach 0
    assert paired_bootstrap(chair_s_relative, b, n, seed=1) == ci          # same seed, same interval


@pytest.mark.unit
def test_swapped_hallucinations_give_an_interval_around_zero():
    # base hallucinates on 0-29, new on 10-39: the same CHAIR_s, 20 images changed each way
    b, n = paired_rows(_chair_rows(set(range(30))), _chair_rows(set(range(10, 40))))
    ci = paired_bootstrap(chair_s_relative, b, n)
    assert ci["delta"] == 0 and ci["low"] < -0.2 and ci["high"] > 0.2


@pytest.mark.unit
def test_recall_delta_by_hand():
    base = {i: (0.0, 2, 2) for i in range(10)}                  # recall 20/20
    new = {i: (0.0, 1 if i < 4 else 2, 2) for i in range(10)}    # recall 16/20
    ci = paired_bootstrap(recall_delta, *paired_rows(base, new))
    assert ci["delta"] == pytest.approx(-0.2)
    assert ci["high"] <= 0 and ci["low"] < ci["delta"]


def _pope(answers_yes: dict[int, bool], labels: dict[int, str]):
    questions = [{"question_id": q, "label": lab, "setting": "adversarial"} for q, lab in labels.items()]
    return questions, {q: ("Yes, there is." if y else "No.") for q, y in answers_yes.items()}


@pytest.mark.unit
def test_f1_delta_on_all_items_equals_pope_metrics():
    rng = np.random.default_rng(0)
    labels = {q: ("yes" if q % 2 else "no") for q in range(200)}
    said_a = {q: bool(rng.random() < (0.85 if q % 2 else 0.15)) for q in labels}
    said_b = {q: bool(rng.random() < (0.75 if q % 2 else 0.10)) for q in labels}
    qa, ans_a = _pope(said_a, labels)
    _, ans_b = _pope(said_b, labels)
    f1 = lambda ans: pope_metrics(qa, ans)["settings"]["adversarial"]["f1"]      # noqa: E731
    ci = paired_bootstrap(f1_delta, *paired_rows(pope_outcomes(qa, ans_a), pope_outcomes(qa, ans_b)))
    assert ci["delta"] == pytest.approx(f1(ans_b) - f1(ans_a), abs=1e-4)
    assert ci["low"] < ci["delta"] < ci["high"]


@pytest.mark.unit
def test_pope_outcomes_count_an_unparsed_answer_as_not_yes():
    questions = [{"question_id": 1, "label": "yes"}, {"question_id": 2, "label": "No"}]
    out = pope_outcomes(questions, {1: "I cannot tell.", 2: "yes"}, policy="strict")
    assert out == {1: (1.0, 0.0), 2: (0.0, 1.0)}


@pytest.mark.unit
def test_chair_outcomes_from_chair_scores():
    caps = [{"image_id": 1, "caption": "A star and a moon."}, {"image_id": 2, "caption": "A heart."},
            {"image_id": 1, "caption": "A star and a ring."}]          # a second prompt for image 1
    truth = {1: ["star", "ring"], 2: ["heart"]}
    out = chair_outcomes(chair_scores(caps, truth, "shapes")["per_caption"])
    # moon hallucinated, ring not mentioned; the second caption of image 1 is an item of its own
    assert out == {(1, 0): (1.0, 1, 2), (2, 0): (0.0, 1, 1), (1, 1): (0.0, 2, 2)}


@pytest.mark.unit
def test_change_intervals_names_the_report_keys_and_pairs_by_id():
    base = {"chair": _chair_rows(set(range(30))), "pope": {"random": {1: (1.0, 1.0), 2: (0.0, 0.0)}}}
    # the new checkpoint's items come in another order: they are paired by id, not by position
    new = {"chair": dict(reversed(list(_chair_rows(set(range(20))).items()))),
           "pope": {"random": {2: (0.0, 0.0), 1: (1.0, 1.0)}}}
    out = change_intervals(base, new)
    assert set(out) == {"chair_s_relative", "recall_delta", "pope_random_f1_delta"}
    assert out["chair_s_relative"]["delta"] == pytest.approx(-1 / 3, abs=1e-4)
    assert out["pope_random_f1_delta"]["delta"] == 0 and out["recall_delta"]["delta"] == 0


@pytest.mark.unit
def test_mismatched_outcomes_are_refused():
    with pytest.raises(ValueError, match="same"):
        paired_bootstrap(f1_delta, np.zeros((3, 2)), np.zeros((4, 2)))


@pytest.mark.unit
def test_seed_mean_interval_by_hand():
    # -1, -2, -3: mean -2, sd 1, t(2) = 4.303 -> half width 4.303 / sqrt(3) = 2.4844
    ci = seed_mean_interval([-1.0, -2.0, -3.0])
    assert ci["mean"] == pytest.approx(-2.0) and ci["sd"] == pytest.approx(1.0) and ci["n"] == 3
    assert (ci["low"], ci["high"]) == (pytest.approx(-4.4844, abs=1e-4), pytest.approx(0.4844, abs=1e-4))
    # eight seeds of a figure: mean 0.45, squared deviations sum to 1.54, so sd = sqrt(1.54 / 7); t(7) = 2.365
    ci = seed_mean_interval([0.5, -0.3, 1.0, 0.3, 0.6, 0.4, 1.1, 0.0])
    assert ci["sd"] == pytest.approx((1.54 / 7) ** 0.5)
    assert ci["low"] == pytest.approx(0.45 - 2.365 * (1.54 / 7) ** 0.5 / 8 ** 0.5) and ci["low"] > 0
    assert seed_mean_interval([3.0]) == {"mean": 3.0, "low": None, "high": None, "sd": None, "n": 1}
    with pytest.raises(ValueError, match="non-empty"):
        seed_mean_interval([])


@pytest.mark.unit
def test_t_quantiles_match_the_published_table():
    # Student's t, two-sided 95 %: 12.706 (1 df), 2.228 (10), 2.042 (30); 2.021 (40) and 1.984 (100) from the
    # tables, where the approximation takes over
    assert (t95(1), t95(10), t95(30)) == (12.706, 2.228, 2.042)
    assert t95(40) == pytest.approx(2.021, abs=0.002) and t95(100) == pytest.approx(1.984, abs=0.002)
    with pytest.raises(ValueError):
        t95(0)
