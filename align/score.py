"""`halign eval chair` and `halign eval pope`: thin file edges around reward.chair and reward.pope.

Everything here reads files, checks them record by record (errors name the file, the record and the fix),
calls the pure scorers and writes the result atomically. No model is loaded.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

from reward.files import InputError, iter_records, read_json, write_json, write_text


# ---------------------------------------------------------------- readers
def _read_captions(path: Path) -> list[dict]:
    """Caption/response records: JSONL or a JSON list of {"image_id", "caption"|"response"}; also the
    reference CHAIR input, a JSON object whose "imgToEval" maps ids to such records."""
    head = _head(path)
    if head.startswith("{"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = None  # JSONL: one object per line
        if isinstance(data, dict) and isinstance(data.get("imgToEval"), dict):
            records = list(data["imgToEval"].values())
            return [_check_caption(path, f"imgToEval item {i}", r) for i, r in enumerate(records)]
    return [_check_caption(path, f"line {where}" if not head.startswith("[") else f"item {where}", rec)
            for where, rec in iter_records(path, "captions file")]


def _check_caption(path: Path, record: str, rec: Any) -> dict:
    if not isinstance(rec, dict):
        raise InputError(f"record is {type(rec).__name__}, expected an object", file=path, record=record,
                         fix='write {"image_id": ..., "caption": "..."} records')
    if "image_id" not in rec:
        raise InputError("missing field 'image_id'", file=path, record=record,
                         fix="give every caption the id of its image")
    if not isinstance(rec.get("caption"), str) and not isinstance(rec.get("response"), str):
        raise InputError("no text: neither 'caption' nor 'response' is a string", file=path, record=record,
                         fix="give every record a 'caption' (or 'response') string")
    return rec


def _head(path: Path) -> str:
    if not path.is_file():
        raise InputError("file not found", file=path, fix="check the path")
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read(4096).lstrip()


def _read_annotations(path: Path, vocab: str, mode: str) -> dict:
    """Ground truth per image from COCO instances_*.json or halign's JSONL annotations."""
    from reward.chair import ground_truth_from_coco, ground_truth_from_records
    data = None
    if _head(path).startswith("{"):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            data = None  # JSONL
    try:
        if isinstance(data, dict) and "annotations" in data:
            for key in ("categories", "annotations"):
                if not isinstance(data.get(key), list):
                    raise InputError(f"'{key}' is missing or not a list", file=path,
                                     fix="pass a COCO instances_*.json file")
            for k, ann in enumerate(data["annotations"]):
                if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
                    raise InputError("annotation without 'image_id' and 'category_id'", record=f"annotations[{k}]",
                                     fix="pass a COCO instances_*.json file")
            return ground_truth_from_coco(data, None, vocab, mode)
        records = []
        for where, rec in iter_records(path, "annotations file"):
            if "image_id" not in rec:
                raise InputError("missing field 'image_id'", record=f"line {where}",
                                 fix='write {"image_id", "objects": [{"name": ...}], "captions": [...]} records')
            if not isinstance(rec.get("objects", []), list) or not isinstance(rec.get("captions", []) or [], list):
                raise InputError("'objects' and 'captions' must be lists", record=f"line {where}",
                                 fix='write "objects": [{"name": ...}] and "captions": ["..."]')
            records.append(rec)
        return ground_truth_from_records(records, vocab, mode)
    except InputError as e:
        raise InputError(e.problem, file=path, record=e.record, fix=e.fix) from None


def _add_gt_captions(truth: dict, path: Path, vocab: str, mode: str) -> None:
    from reward.chair import caption_objects
    data = read_json(path, "COCO captions file")
    anns = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(anns, list):
        raise InputError("no 'annotations' list", file=path, fix="pass a COCO captions_*.json file")
    for k, ann in enumerate(anns):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise InputError("annotation without 'image_id' and a 'caption' string", file=path,
                             record=f"annotations[{k}]", fix="pass a COCO captions_*.json file")
        truth.setdefault(ann["image_id"], set()).update(caption_objects(ann["caption"], vocab, mode))


def _result_json(result: dict) -> str:
    """The CHAIR result as JSON: summary fields indented, one line per caption (readable, and fast to write
    for 100k captions, which an indented dump of every pair is not)."""
    head = {k: v for k, v in result.items() if k != "per_caption"}
    rows = ",\n".join("    " + json.dumps(row, ensure_ascii=False) for row in result["per_caption"])
    body = json.dumps(head, indent=2, ensure_ascii=False)[:-2]
    return body + ',\n  "per_caption": [\n' + rows + ("\n" if rows else "") + "  ]\n}\n"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


# ---------------------------------------------------------------- verbs
def chair_command(captions: Path, annotations: Path, out: Path, gt_captions: Path | None = None,
                  vocab: str = "coco", mode: Literal["reference", "fixed"] = "reference") -> int:
    """Score captions with CHAIR_s / CHAIR_i / recall (Rohrbach et al. 2018).

    The default mode gives, caption by caption, what the original CHAIR code gives; "fixed" repairs its
    known word bugs (bus, motor bike, glass, ties, ...) for correct words rather than comparable numbers.

    Args:
        captions: JSONL or JSON list of {"image_id", "caption"} or {"image_id", "response"} records
        annotations: COCO instances_*.json, or JSONL {"image_id", "objects": [{"name"}], "captions"}
        out: where to write the CHAIR result JSON (with error_types: hallucinated objects named in place
            of a present one, added beside every present one, and present objects not named)
        gt_captions: COCO captions_*.json whose objects count as ground truth too (as in the paper)
        vocab: object vocabulary: coco, shapes, or a .json/.yaml/.txt file
        mode: reference (the original code's numbers) or fixed (its known bugs repaired)
    """
    from reward.analysis import hallucination_analysis
    from reward.chair import chair_scores, lookup_truth
    from reward.vocab import load_vocabulary
    load_vocabulary(vocab)  # a bad --vocab fails before any file is read
    records = _read_captions(Path(captions))
    truth = _read_annotations(Path(annotations), vocab, mode)
    if gt_captions is not None:
        _add_gt_captions(truth, Path(gt_captions), vocab, mode)
    missing = sum(1 for r in records if lookup_truth(truth, r["image_id"]) is None)
    if records and missing == len(records):
        raise InputError(f"none of the {len(records)} captions' image ids occurs in the annotations",
                         file=annotations, fix="pass the annotations of the captioned images (ids must match)")
    if missing:
        print(f"halign: warning: {missing} of {len(records)} captions are of images the annotations do not "
              f"list; they count as images without objects", file=sys.stderr)
    result = chair_scores(records, truth, vocab, mode)
    errors = result["error_types"] = hallucination_analysis(result["per_caption"])["error_types"]
    write_text(out, _result_json(result))
    print(f"CHAIR_s {_pct(result['chair_s'])}%  CHAIR_i {_pct(result['chair_i'])}%  recall {_pct(result['recall'])}%"
          f"  ({result['n_captions']} captions, {result['n_mentions']} mentions, {result['n_hallucinated']} "
          f"hallucinated; mode {mode}, vocabulary {result['vocabulary']}) -> {out}")
    print(f"objects named in place of a present one (likely misrecognised) {errors['substitutions']}, added "
          f"beside every present one (often the language prior) {errors['insertions']}, present but not named "
          f"{errors['deletions']}")
    return 0


def pope_command(questions: Path, answers: Path, out: Path,
                 parse: Literal["reference", "strict"] = "reference") -> int:
    """Score POPE answers: accuracy, precision, recall, F1 (positive = yes), yes-ratio, per setting and averaged.

    Args:
        questions: POPE questions JSONL ({"question_id", "label", "setting", ...}) from `halign data pope`
        answers: answers JSONL ({"question_id", "answer"}; "response" or "text" also read)
        out: where to write the POPE result JSON
        parse: answer parsing: reference (POPE's evaluate.py rule) or strict (a bare yes/no word only)
    """
    from reward.pope import pope_metrics
    questions, answers = Path(questions), Path(answers)
    qs = []
    for where, rec in iter_records(questions, "POPE questions file"):
        if "question_id" not in rec or "label" not in rec:
            raise InputError("missing 'question_id' or 'label'", file=questions, record=f"line {where}",
                             fix="use the question files written by `halign data pope`")
        qs.append(rec)
    answer_of: dict[Any, str] = {}
    for where, rec in iter_records(answers, "POPE answers file"):
        text = next((rec[k] for k in ("answer", "response", "text") if isinstance(rec.get(k), str)), None)
        if "question_id" not in rec or text is None:
            raise InputError("missing 'question_id' or an 'answer' string", file=answers, record=f"line {where}",
                             fix='write {"question_id": ..., "answer": "..."} records')
        if rec["question_id"] in answer_of:
            raise InputError(f"question {rec['question_id']!r} is answered twice", file=answers,
                             record=f"line {where}", fix="keep one answer per question")
        answer_of[rec["question_id"]] = text
    try:
        result = pope_metrics(qs, answer_of, parse)
    except InputError as e:
        raise InputError(e.problem, file=questions if "label" in e.problem else answers, record=e.record,
                         fix=e.fix) from None
    write_json(out, result)
    rows = list(result["settings"].items()) + [("average", result["average"])]
    print(f"POPE (answers parsed by the {parse} policy)")
    print(f"{'setting':<12} {'acc':>6} {'prec':>6} {'rec':>6} {'f1':>6} {'yes%':>6} {'n':>6} {'unparsed':>8}")
    for name, m in rows:
        print(f"{name:<12} {_pct(m['accuracy']):>6} {_pct(m['precision']):>6} {_pct(m['recall']):>6} "
              f"{_pct(m['f1']):>6} {_pct(m['yes_ratio']):>6} {m['n']:>6} {m['unparsed']:>8}")
    print(f"-> {out}")
    return 0
