"""POPE: the reference evaluate.py parsing rule, the strict policy, and the metrics (computed by hand)."""
import pytest

from reward.files import InputError
from reward.pope import parse_pope_answer, pope_metrics

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("answer, expected", [
    ("Yes", "yes"), ("No", "no"), ("no", "no"),
    ("Yes, there is a dog in the image.", "yes"),
    ("No, there is no dog.", "no"),
    ("There is not a dog.", "no"),                 # "not" is a no-word
    ("NO", "yes"),                                 # only "No", "no", "not" count: the reference
    ("Nope.", "yes"),
    ("No.", "no"),                                 # text before the first "." is "No"
    ("Yes. There is no dog.", "yes"),              # only the first sentence is read
    ("There is a dog. No cat.", "yes"),
    ("no,", "no"),                                 # commas are dropped before splitting
    ("Not", "yes"),                                # "Not" is not in the list
    ("I see no\tdog", "yes"),                      # split on single spaces only: "no\tdog" is one word
    ("", "yes"),
])
def test_reference_parsing(answer, expected):
    assert parse_pope_answer(answer, "reference") == expected


@pytest.mark.parametrize("answer, expected", [
    ("Yes", "yes"), ("yes.", "yes"), (" NO ", "no"), ("No!", "no"),
    ("Yes, there is a dog.", None), ("There is not a dog.", None), ("Nope", None), ("", None),
])
def test_strict_parsing(answer, expected):
    assert parse_pope_answer(answer, "strict") == expected


def test_unknown_policy():
    with pytest.raises(ValueError):
        parse_pope_answer("yes", "lenient")


QUESTIONS = [
    {"question_id": 1, "label": "yes", "setting": "random"},
    {"question_id": 2, "label": "yes", "setting": "random"},
    {"question_id": 3, "label": "no", "setting": "random"},
    {"question_id": 4, "label": "no", "setting": "random"},
    {"question_id": 5, "label": "yes", "setting": "popular"},
    {"question_id": 6, "label": "no", "setting": "popular"},
]
ANSWERS = {1: "Yes.", 2: "No, there is not.", 3: "Yes", 4: "no", 5: "Sure, there is one", 6: "No"}


def test_metrics_per_setting_and_average():
    r = pope_metrics(QUESTIONS, ANSWERS)
    assert r["policy"] == "reference"
    rnd = r["settings"]["random"]
    # TP=1 (q1) FN=1 (q2) FP=1 (q3) TN=1 (q4)
    assert (rnd["tp"], rnd["fn"], rnd["fp"], rnd["tn"]) == (1, 1, 1, 1)
    assert rnd["accuracy"] == 0.5 and rnd["precision"] == 0.5 and rnd["recall"] == 0.5 and rnd["f1"] == 0.5
    assert rnd["yes_ratio"] == 0.5 and rnd["n"] == 4 and rnd["unparsed"] == 0
    pop = r["settings"]["popular"]
    # q5 "Sure, there is one" -> yes (TP); q6 -> no (TN)
    assert (pop["accuracy"], pop["precision"], pop["recall"], pop["f1"], pop["yes_ratio"]) == (1.0, 1.0, 1.0, 1.0, 0.5)
    avg = r["average"]
    assert avg["accuracy"] == 0.75 and avg["f1"] == 0.75 and avg["n"] == 6 and avg["unparsed"] == 0


def test_strict_policy_counts_unparsed_answers():
    r = pope_metrics(QUESTIONS, ANSWERS, "strict")
    rnd = r["settings"]["random"]
    # q1 "Yes." -> yes (TP); q2 unparsed; q3 "Yes" -> yes (FP); q4 "no" -> no (TN)
    assert rnd["unparsed"] == 1
    assert rnd["accuracy"] == 2 / 4            # the unparsed answer counts as wrong
    assert rnd["precision"] == 1 / 2
    assert rnd["recall"] == 1 / 2              # the unparsed yes-question is a miss
    assert rnd["yes_ratio"] == 2 / 4
    pop = r["settings"]["popular"]
    assert pop["unparsed"] == 1 and pop["accuracy"] == 0.5 and pop["precision"] == 0.0
    assert r["policy"] == "strict" and r["average"]["unparsed"] == 2


def test_questions_without_setting_fall_in_all():
    r = pope_metrics([{"question_id": "a", "label": "yes"}], {"a": "yes"})
    assert list(r["settings"]) == ["all"]


def test_missing_answer_and_bad_label_are_input_errors():
    with pytest.raises(InputError, match="no answer"):
        pope_metrics([{"question_id": 9, "label": "yes"}], {})
    with pytest.raises(InputError, match="label"):
        pope_metrics([{"question_id": 9, "label": "maybe"}], {9: "yes"})


def test_string_and_integer_question_ids_match():
    assert pope_metrics([{"question_id": "3", "label": "no"}], {3: "no"})["average"]["accuracy"] == 1.0
