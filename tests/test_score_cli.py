"""`halign eval chair` / `halign eval pope` through the CLI: files in, result JSON out, clean errors."""
import json

import pytest

from align.cli import main

pytestmark = pytest.mark.unit

INSTANCES = {
    "images": [{"id": 1}, {"id": 2}],
    "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 18},
                    {"id": 2, "image_id": 2, "category_id": 1, "iscrowd": 1}],
}
GT_CAPTIONS = {"annotations": [{"image_id": 1, "caption": "A dog lying on a couch."}]}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def files(tmp_path):
    (tmp_path / "instances.json").write_text(json.dumps(INSTANCES))
    (tmp_path / "gt_captions.json").write_text(json.dumps(GT_CAPTIONS))
    write_jsonl(tmp_path / "captions.jsonl", [{"image_id": 1, "caption": "A dog on a couch."},
                                             {"image_id": 2, "response": "A man and two buses."}])
    return tmp_path


def test_eval_chair_writes_the_result(files, capsys):
    out = files / "out" / "chair.json"
    rc = main(["eval", "chair", "--captions", str(files / "captions.jsonl"),
               "--annotations", str(files / "instances.json"), "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert (r["n_captions"], r["n_mentions"], r["n_hallucinated"]) == (2, 4, 2)
    assert r["per_caption"][1]["hallucinated"] == [["bus", "bus"]]
    # the couch and the buses are named beside the present dog and man, in place of nothing
    assert r["error_types"] == {"substitutions": 0, "insertions": 2, "deletions": 0}
    text = capsys.readouterr().out
    assert "CHAIR_s 100.0%" in text and "language prior) 2, present but not named 0" in text


def test_eval_chair_with_gt_captions_and_fixed_mode(files):
    out = files / "chair.json"
    assert main(["eval", "chair", "--captions", str(files / "captions.jsonl"), "--annotations",
                 str(files / "instances.json"), "--gt-captions", str(files / "gt_captions.json"),
                 "--mode", "fixed", "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["per_caption"][0]["hallucinated"] == []          # the couch is in a GT caption
    assert r["mode"] == "fixed"


def test_eval_chair_reads_jsonl_annotations_and_a_json_list(tmp_path):
    write_jsonl(tmp_path / "ann.jsonl", [{"image_id": "a", "image": "a.png", "objects": [{"name": "star"}],
                                          "captions": ["a star"]}])
    (tmp_path / "caps.json").write_text(json.dumps([{"image_id": "a", "caption": "Two stars and a moon."}]))
    out = tmp_path / "r.json"
    assert main(["eval", "chair", "--captions", str(tmp_path / "caps.json"), "--annotations",
                 str(tmp_path / "ann.jsonl"), "--vocab", "shapes", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["chair_i"] == 0.5


@pytest.mark.parametrize("captions, message", [
    ([{"caption": "a dog"}], "image_id"),
    ([{"image_id": 1, "text": "a dog"}], "caption"),
    ([{"image_id": 99, "caption": "a dog"}], "none of the 1 captions"),
])
def test_eval_chair_bad_input_exits_2_with_one_paragraph(files, capsys, captions, message):
    write_jsonl(files / "bad.jsonl", captions)
    rc = main(["eval", "chair", "--captions", str(files / "bad.jsonl"), "--annotations",
               str(files / "instances.json"), "--out", str(files / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1
    assert not (files / "x.json").exists()


def test_eval_chair_unknown_category(files, capsys):
    (files / "inst2.json").write_text(json.dumps({"images": [], "categories": [{"id": 5, "name": "ufo"}],
                                                  "annotations": []}))
    rc = main(["eval", "chair", "--captions", str(files / "captions.jsonl"), "--annotations",
               str(files / "inst2.json"), "--out", str(files / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "inst2.json" in err and "ufo" in err and "--vocab" in err


def test_eval_pope(tmp_path, capsys):
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "label": "yes", "setting": "random"},
                                       {"question_id": 2, "label": "no", "setting": "random"}])
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "answer": "Yes."},
                                       {"question_id": 2, "answer": "NO, there is none."}])
    out = tmp_path / "pope.json"
    assert main(["eval", "pope", "--questions", str(tmp_path / "q.jsonl"), "--answers", str(tmp_path / "a.jsonl"),
                 "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["policy"] == "reference" and r["settings"]["random"]["accuracy"] == 0.5
    text = capsys.readouterr().out
    assert "reference policy" in text and "random" in text and "average" in text
    assert main(["eval", "pope", "--questions", str(tmp_path / "q.jsonl"), "--answers", str(tmp_path / "a.jsonl"),
                 "--out", str(out), "--parse", "strict"]) == 0
    assert json.loads(out.read_text())["settings"]["random"]["unparsed"] == 1


def test_eval_pope_missing_answer(tmp_path, capsys):
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": 1, "label": "yes"}, {"question_id": 2, "label": "no"}])
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "answer": "Yes."}])
    rc = main(["eval", "pope", "--questions", str(tmp_path / "q.jsonl"), "--answers", str(tmp_path / "a.jsonl"),
               "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "a.jsonl" in err and "question 2" in err


def test_result_json_round_trips():
    from align.score import _result_json
    for per_caption in ([], [{"image_id": 1, "caption": "é \"q\"", "mentioned": [], "hallucinated": [],
                               "ground_truth": []}]):
        result = {"chair_s": 0.0, "n_captions": len(per_caption), "per_caption": per_caption}
        assert json.loads(_result_json(result)) == result
