"""Preference pairs from grounded annotations: `halign data pairs`.

Strategies (combinable; data_prep/mining.py has one method each):
- inject: chosen = a grounded caption (GT, or composed from the boxes); rejected = the same text with an
  absent object inserted, a present one swapped for an absent one (HA-DPO, POVID, HALVA), or a present
  one omitted (so that the model is not simply taught "say less"); proportions set by --edit-mix;
- rank: k sampled responses per image (--responses), scored against the annotations; chosen = best,
  rejected = worst, kept when the score margin passes --margin (RLAIF-V style, on-policy);
- correct: chosen = a response (or a GT caption when no responses are given) with its hallucinated objects
  removed, rejected = the original (RLHF-V style);
- image: same text, rejected image = a corrupted copy (crop, noise, blur, object masked) (mDPO, SeVa).

Records follow DESIGN.md in TRL's conversational vision layout (the prompt carries the {"type": "image"}
placeholder that TRL's DataCollatorForVisionPreference fills from the "images" column), plus provenance:
edit, objects_added / objects_removed on the rejected side, source, scores, and for the image strategy
`rejected_images` (paths relative to the pairs file) and the corruption spec. TRL's DPOTrainer ignores the
extra columns; `rejected_images` needs a trainer that feeds a second image to the rejected side.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Iterable, Iterator, Literal

from reward.files import InputError, atomic_path, iter_records, write_json

from data_prep.annotations import GroundedImage, load_annotations, resolve_vocab
from data_prep.mining import EDITS, Miner, MiningOptions
from data_prep.objstats import ObjectStats, read_id_list
from data_prep.pairstats import MiningStats, length_bias_note

STRATEGIES = ("inject", "rank", "correct", "image", "qa")
_METHOD = {"inject": "inject", "rank": "rank", "correct": "correct", "image": "image_pairs", "qa": "qa"}


def mine_pairs(images: Iterable[GroundedImage], strategies, vocab, *, seed: int, responses=None,
               exclude=(), options: MiningOptions | None = None, stats: MiningStats | None = None,
               progress: bool = False, answers=None) -> Iterator[dict]:
    """Yield preference pair records (pure: no file is read or written).

    images: grounded images (a list is best; an iterator is read once into a list, since the
        co-occurrence statistics need a pass before mining).
    strategies: names from STRATEGIES, mined image by image in the order given.
    vocab: a reward.vocab.Vocabulary, or a name/path for load_vocabulary.
    seed: every random choice is seeded per (seed, strategy, image), so the output is identical for the
        same inputs and seed, and leaving out an image never changes another image's random draws (the
        popularity/co-occurrence counts, taken over the mined images, do change with the image set).
    responses: {image_id: [response, ...]} for rank and correct (ids compared as strings).
    answers: {image_id: {(question, object): [answer, ...]}}, the model's own answers to yes/no questions
        (read_answers): qa then pairs the questions it answered wrong at least once (on-policy).
    exclude: image ids never mined (compared as strings), e.g. the CHAIR/POPE evaluation images.
    stats: a MiningStats to fill (pairs, skips, lengths, categories).
    """
    from reward.chair import extract_mentions

    strategies = list(dict.fromkeys(strategies))
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise InputError(f"unknown strategy {unknown[0]!r}" if unknown else "no strategy given",
                         fix=f"choose from {', '.join(STRATEGIES)}")
    o = options or MiningOptions()
    _check_options(o, strategies, responses)
    if answers is not None and "qa" not in strategies:
        raise InputError("answers are read by the qa strategy only", fix="add qa to the strategies, or drop --answers")
    if o.qa_replay and answers is not None:
        raise InputError("qa replay rehearses the true answers; on-policy answers make preference pairs",
                         fix="drop --qa-replay or --answers")
    vocab = resolve_vocab(vocab)
    stats = stats if stats is not None else MiningStats()
    excluded = {str(x) for x in exclude}
    kept = []
    for im in images:
        stats.n_images_seen += 1
        if excluded and str(im.image_id) in excluded:
            stats.n_excluded += 1
        else:
            kept.append(im)
    # statistics from the mined images only: evaluation images must not shape the training pairs either
    object_stats = ObjectStats(im.object_names for im in kept) if (
        ("inject" in strategies or "qa" in strategies) and (o.absent_from != "random" or "cooccur" in (o.omit_from, o.qa_present_from))) else None
    resp = {str(k): list(v) for k, v in (responses or {}).items()}
    mode = o.mention_mode
    extract = lambda text: extract_mentions(text, vocab, mode)  # noqa: E731
    habits = Miner.count_habits(kept, resp, extract) if "habit" in (o.omit_from, o.qa_present_from) else None
    miner = Miner(vocab, extract, o, seed, stats, object_stats, resp,
                  answers={str(k): v for k, v in answers.items()} if answers is not None else None, habits=habits)
    methods = [getattr(miner, _METHOD[s]) for s in strategies]
    seen: set[bytes] = set()
    iterable = kept
    if progress:
        from tqdm import tqdm
        iterable = tqdm(kept, desc="mining " + "+".join(strategies), unit=" img", mininterval=0.5)
    for image in iterable:
        present = image.object_names
        for method in methods:
            for rec in method(image):
                key = _pair_key(rec)
                if key in seen:
                    stats.skip(f"{rec['strategy']}: exact duplicate")
                    continue
                seen.add(key)
                stats.add(rec, present)
                yield rec


def _pair_key(rec: dict) -> bytes:
    text = json.dumps([str(rec["image_id"]), rec["images"], rec["rejected_images"], rec["prompt"],
                       rec["chosen"], rec["rejected"]], ensure_ascii=False, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


# how Miner.pick_present chooses a present object (omit_from, qa_present_from)
PRESENT_CHOICES = ("cooccur", "habit", "random")


def _check_options(o: MiningOptions, strategies, responses) -> None:
    bad = [e for e in o.edit_mix if e not in EDITS]
    if bad or any(w < 0 for w in o.edit_mix.values()) or not any(w > 0 for w in o.edit_mix.values()):
        raise InputError(f"bad edit mix {o.edit_mix!r}", fix=f"give non-negative weights to {', '.join(EDITS)}, "
                         "e.g. insert=1,swap=1,omit=1")
    if o.absent_from not in ("cooccur", "popular", "random"):
        raise InputError(f"bad absent-object choice {o.absent_from!r}", fix="use cooccur, popular or random")
    if o.omit_from not in PRESENT_CHOICES:
        raise InputError(f"bad omitted-object choice {o.omit_from!r}", fix="use cooccur, habit or random")
    if o.qa_present_from not in PRESENT_CHOICES:
        raise InputError(f"bad qa present-object choice {o.qa_present_from!r}", fix="use cooccur, habit or random")
    if o.inject_from not in ("captions", "responses"):
        raise InputError(f"bad inject text source {o.inject_from!r}", fix="use captions or responses")
    if o.inject_from == "responses" and not responses:
        raise InputError("inject-from responses edits the model's own responses, and no responses were given",
                         fix="pass --responses (the model's sampled captions), or use --inject-from captions")
    if o.omit_from == "habit" and not responses:
        raise InputError("omit-from habit drops the objects the model's responses name where absent, and no "
                         "responses were given", fix="pass --responses (the model's sampled captions), or use "
                         "--omit-from cooccur or random")
    if o.qa_present_from == "habit" and not responses:
        raise InputError("qa-present-from habit asks about the objects the model's responses name where absent, "
                         "and no responses were given", fix="pass --responses (the model's sampled captions), or "
                         "use --qa-present-from cooccur or random")
    if o.qa_questions not in ("both", "one"):
        raise InputError(f"bad qa questions {o.qa_questions!r}", fix="use both (a present and an absent object "
                         "per image) or one (either, by a seeded coin)")
    if o.repeat_weight < 0:
        raise InputError(f"repeat weight {o.repeat_weight} is negative", fix="give 0 (repeats cost nothing) or more")
    if o.per_image < 1 or o.top_k < 1:
        raise InputError("per-image and top-k must be at least 1")
    if o.length_match is not None and o.length_match < 0:
        raise InputError("length-match must be a non-negative tolerance (0.2 = 20 %)")
    from data_prep.corrupt import CORRUPTIONS
    if "image" in strategies and (not o.corruptions or any(c not in CORRUPTIONS for c in o.corruptions)):
        raise InputError(f"bad corruptions {list(o.corruptions)!r}", fix=f"choose from {', '.join(CORRUPTIONS)}")
    if "rank" in strategies and not responses:
        raise InputError("the rank strategy needs sampled responses",
                         fix="pass --responses (JSONL of image_id, prompt, response; several per image)")


def read_responses(path: str | Path) -> dict[str, list[str]]:
    """{image_id (as str): [responses in file order]} from a generations JSONL/JSON list."""
    out: dict[str, list[str]] = {}
    for where, rec in iter_records(path, "responses file"):
        text = rec.get("response", rec.get("caption"))
        if "image_id" not in rec or not isinstance(text, str):
            raise InputError("record needs 'image_id' and a string 'response'", file=path,
                             record=f"line {where}" if isinstance(where, int) else where,
                             fix="pass the output of `halign eval generate` (with sampling, several per image)")
        out.setdefault(str(rec["image_id"]), []).append(text.strip())
    return out


def read_answers(path: str | Path) -> dict[str, dict[tuple[str, str], list[str]]]:
    """{image_id (str): {(question, object): [answers in file order]}} from `halign eval generate` run on a
    `halign data pope` question file (the questions' "object" field is carried into every answer row)."""
    out: dict[str, dict[tuple[str, str], list[str]]] = {}
    for where, rec in iter_records(path, "answers file"):
        question, text = rec.get("prompt", rec.get("text")), rec.get("response", rec.get("answer"))
        if "image_id" not in rec or not isinstance(rec.get("object"), str) or not isinstance(question, str) \
                or not isinstance(text, str):
            raise InputError("an answer record needs 'image_id', 'object', 'prompt' and 'response'", file=path,
                             record=f"line {where}" if isinstance(where, int) else where,
                             fix="generate the answers from a `halign data pope` question file: "
                                 "halign eval generate --prompts pope_adversarial.jsonl --sample --num-samples 4 ...")
        out.setdefault(str(rec["image_id"]), {}).setdefault((question, rec["object"]), []).append(text.strip())
    return out


def parse_edit_mix(text: str | dict) -> dict[str, float]:
    """"insert=2,swap=1,omit=1" (the command line) or {insert: 2, swap: 1, omit: 1} (a pipeline YAML) -> weights."""
    if isinstance(text, dict):
        text = ",".join(f"{k}={v}" for k, v in text.items())
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, value = part.partition("=")
        try:
            mix[name.strip()] = float(value) if eq else 1.0
        except ValueError:
            raise InputError(f"bad edit weight {part!r}", fix="write e.g. insert=1,swap=1,omit=1") from None
    return mix


def pairs_command(annotations: Path, images: Path, out: Path, strategy: list[str], captions: Path | None = None,
                  responses: Path | None = None, vocab: str = "coco", exclude: Path | None = None, seed: int = 0,
                  edit_mix: str = "insert=1,swap=1,omit=1",
                  absent_from: Literal["cooccur", "popular", "random"] = "cooccur",
                  omit_from: Literal["cooccur", "habit", "random"] = "random",
                  inject_from: Literal["captions", "responses"] = "captions", top_k: int = 3,
                  per_image: int = 1, margin: float = 0.5, repeat_weight: float = 0.0,
                  length_match: float | None = None,
                  prompt: str = "Describe the image.", corruptions: list[str] | None = None,
                  compose: bool = True, qa_questions: Literal["both", "one"] = "both", qa_replay: bool = False,
                  qa_present_from: Literal["cooccur", "habit", "random"] = "random",
                  answers: Path | None = None, correct_complete: bool = False,
                  correct_only_complete: bool = False,
                  skip_bad: bool = False, check_images: bool = True) -> int:
    """Mine preference pairs (DPO) from grounded annotations.

    Writes OUT (pairs JSONL, TRL's conversational vision layout with provenance) and stats.json beside it;
    the image strategy also writes its corrupted images to pair_images/ beside it. All writes are atomic.

    Args:
        annotations: COCO instances JSON or generic JSONL of grounded images.
        images: folder the image paths are relative to.
        out: the pairs JSONL to write.
        strategy: one or more of inject (grounded captions against edited copies), rank (the best against
            the worst of sampled responses), correct (a sampled response with its hallucinated objects
            removed against the response; its chosen side is shorter, which teaches DPO to say less, so
            balance it with inject's omit edits), image (the same caption with a corrupted image), qa
            (POPE-form yes/no pairs: a present object Yes > No, the most co-occurring absent one No > Yes).
        captions: COCO captions JSON (or JSONL of image_id, caption): the grounded texts inject starts from.
        responses: sampled responses JSONL (image_id, prompt, response; several per image) for rank/correct.
        vocab: object vocabulary: coco, shapes, or a JSON/YAML file.
        exclude: image ids never mined (one a line, a JSON list, a JSONL with image_id, or pope_images.json).
        seed: random seed (same inputs and seed give byte-identical output).
        edit_mix: inject edit proportions, e.g. insert=1,swap=1,omit=1 (omission pairs keep recall); a
            pipeline YAML may give a mapping {insert: 1, swap: 1, omit: 1}.
        absent_from: how inject picks the absent object: cooccur (most tempting), popular or random.
        omit_from: which present object inject's omit edit drops: random; cooccur (the one the other named
            objects predict most); or habit (the one the model's --responses most often name where it is
            absent). Where insertions and corrections teach "not there, do not name it", these teach "there,
            name it", so DPO learns to look rather than to avoid the word.
        inject_from: the texts inject edits: captions (GT, else composed from the boxes), or responses: first
            the model's own --responses that name only present objects (on-policy text, so the edits sit at
            the model's own decisions), then the captions.
        top_k: draw the absent object among the top-k candidates, weighted by score.
        per_image: pairs per image and strategy.
        margin: rank: minimum score difference (score = coverage - hallucinated objects).
        repeat_weight: rank's score also subtracts this times the repeated mentions (an object named again),
            and with a weight > 0 correct skips responses that name an object twice: sampled captions that
            repeat a present object in place of an absent one otherwise win as chosen sides and teach the
            repetition (0 by default: "a man ... the man" is a fine COCO caption).
        length_match: keep only pairs whose word counts differ by at most this fraction (e.g. 0.2).
        prompt: the user prompt of every pair.
        corruptions: image strategy corruptions to draw from (crop noise blur mask; default all).
        compose: compose a caption from the boxes when an image has no grounded GT caption.
        qa_questions: qa: both (a present and an absent object per image) or one of the two (seeded coin).
        qa_present_from: qa: which present object the "Yes." question asks about: random; cooccur (the one
            the other objects predict most); or habit (the one the model's --responses most often name where
            it is absent: caption DPO teaches not to name it where absent, and the answers about it drift to
            "No" where it is there). On the demo habit made every answer drift to "No" (the common kinds
            lost their "Yes." rows): README, "More samples, rehearsal and the sft weight".
        qa_replay: qa: rejected = chosen (the true answer). DPO's sigmoid term then ignores these rows and only
            the SFT term of loss_type [sigmoid, sft] learns from them: a rehearsal of the yes/no task that
            keeps caption DPO from drifting it.
        answers: qa on-policy: the model's sampled answers to yes/no questions about these images
            (`halign data pope` questions through `halign eval generate --sample`); qa then pairs every
            question it answered wrong at least once (chosen: the true answer, rejected: the wrong one).
        correct_complete: correct also adds the present objects a response leaves out (chosen = the
            response right both ways, about as long as the rejected one) and corrects responses that only
            leave objects out: the correction pairs then teach "name what is there" as well as "not what is
            not", and teach DPO less to stop early (on the demo recall held, but the cut and POPE F1 fell:
            README, "DPO targets on the Intel CPU").
        correct_only_complete: correct only corrects responses that, without their hallucinations, still
            name every present object, so no chosen side (which DPO's sft term also learns) leaves an
            object out; the chosen text stays the model's own (with correct_complete it changes nothing;
            on the demo recall held and the cut fell below 50 % on some seeds: README, "DPO targets on
            the Intel CPU").
        skip_bad: skip and count bad annotation records instead of stopping.
        check_images: check that every image file exists.
    """
    t0 = time.perf_counter()
    voc = resolve_vocab(vocab)
    loaded = load_annotations(annotations, images, captions, vocab=voc, skip_bad=skip_bad,
                              check_images=check_images)
    t_load = time.perf_counter() - t0
    options = MiningOptions(prompt=prompt, edit_mix=parse_edit_mix(edit_mix), absent_from=absent_from,
                            omit_from=omit_from, inject_from=inject_from, top_k=top_k, per_image=per_image,
                            compose=compose, margin=margin, repeat_weight=repeat_weight,
                            length_match=length_match, qa_questions=qa_questions, qa_replay=qa_replay,
                            qa_present_from=qa_present_from,
                            correct_complete=correct_complete, correct_only_complete=correct_only_complete,
                            corruptions=tuple(corruptions) if corruptions else MiningOptions().corruptions)
    resp = read_responses(responses) if responses is not None else None
    asked = read_answers(answers) if answers is not None else None
    excluded = read_id_list(exclude) if exclude is not None else set()
    stats = MiningStats()
    stats.skipped.update({f"load: {k}": v for k, v in loaded.skipped.items()})
    out = Path(out)
    pairs = mine_pairs(loaded.images, strategy, voc, seed=seed, responses=resp, exclude=excluded,
                       options=options, stats=stats, progress=True, answers=asked)
    if "image" in strategy:
        n = _write_with_images(pairs, out, Path(images), options.images_dir)
    else:
        n = _write_pairs(pairs, out)
    summary = {"pairs_file": out.name, "seed": seed, "strategies": list(strategy), "vocab": voc.name,
               "images_root": str(Path(images).resolve()), "options": _options_dict(options), **stats.summary(voc.objects)}
    write_json(out.parent / "stats.json", summary)
    dt = time.perf_counter() - t0
    per = ", ".join(f"{s} {v['pairs']} (len ratio {v['length']['ratio_of_means']:.2f})"
                    for s, v in summary["per_strategy"].items())
    print(f"pairs: {n} pairs from {len(stats.images)} images [{per}] -> {out} "
          f"(load {t_load:.1f}s, total {dt:.1f}s, {n / max(dt, 1e-9):.0f} pairs/s)")
    if n == 0:
        print(f"pairs: warning: no pair mined; skipped: {summary['skipped']}")
    note = length_bias_note(summary)
    if note:
        print(f"pairs: note: {note}")
    return 0


def _options_dict(o: MiningOptions) -> dict:
    from dataclasses import asdict
    d = asdict(o)
    d["corruptions"] = list(d["corruptions"])
    return d


def _write_pairs(pairs: Iterable[dict], out: Path) -> int:
    n = 0
    with atomic_path(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in pairs:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def _write_with_images(pairs: Iterable[dict], out: Path, images_root: Path, images_dir: str) -> int:
    """Write the pairs and render the image strategy's corrupted copies, both atomically."""
    from data_prep.corrupt import render_corruption

    def rendered(tmp_dir: Path):
        for rec in pairs:
            if rec["corruption"] is not None:
                name = rec["rejected_images"][0].split("/", 1)[1]
                src = images_root / rec["images"][0]
                if not src.is_file():
                    raise InputError(f"image {rec['images'][0]!r} not found under {images_root}",
                                     record=f"image_id {rec['image_id']!r}",
                                     fix="the image strategy needs the image files (--images)")
                render_corruption(src, rec["corruption"], tmp_dir / name)
            yield rec

    with atomic_path(out.parent / images_dir) as tmp_dir:
        tmp_dir.mkdir()
        return _write_pairs(rendered(tmp_dir), out)


def load_pairs_dataset(path: str | Path, images_root: str | Path | None = None):
    """Load a pairs JSONL as a datasets.Dataset ready for TRL's DPOTrainer.

    Columns: images (list of PIL images, decoded on access), prompt, chosen, rejected (conversational
    messages with typed content parts), plus the provenance columns; `rejected_images` (image strategy)
    decodes to PIL as well, `corruption` is a JSON string, `image_id` a string.
    images_root: folder the `images` paths are relative to (default: the images_root recorded in the
    stats.json written beside the pairs, else the pairs file's folder).
    """
    import datasets

    path = Path(path)
    here = path.resolve().parent
    root = Path(images_root) if images_root is not None else _recorded_images_root(path) or here
    rows = []
    for where, rec in iter_records(path, "pairs file"):
        for key in ("images", "prompt", "chosen", "rejected"):
            if key not in rec:
                raise InputError(f"pair has no {key!r}", file=path, record=f"line {where}",
                                 fix="pass a file written by `halign data pairs`")
        row = dict(rec)
        row["image_id"] = str(rec.get("image_id"))
        row["images"] = [str(root / p) for p in rec["images"]]
        row["rejected_images"] = [str(here / p) for p in rec.get("rejected_images", [])]
        row["corruption"] = json.dumps(rec["corruption"]) if rec.get("corruption") is not None else None
        rows.append(row)
    if not rows:
        raise InputError("the pairs file holds no pair", file=path, fix="mine pairs first")
    missing = next((p for r in rows for p in r["images"] + r["rejected_images"] if not Path(p).is_file()), None)
    if missing is not None:
        raise InputError(f"image {missing} not found", file=path,
                         fix="pass images_root (the --images folder the pairs were mined from)")
    ds = datasets.Dataset.from_list(rows)
    # fix the types that an all-empty or all-null column would leave undetermined
    features = ds.features.copy()
    for name, feature in _PAIR_FEATURES().items():
        if name in features:
            features[name] = feature
    return ds.cast(features)


def _PAIR_FEATURES() -> dict:
    from datasets import Image, List, Value

    text, names, images = Value("string"), List(Value("string")), List(Image())
    message = List({"role": text, "content": List({"type": text, "text": text})})
    return {"image_id": text, "images": images, "prompt": message, "chosen": message, "rejected": message,
            "strategy": text, "chosen_hallucinated": names, "rejected_hallucinated": names, "edit": text,
            "objects_added": names, "objects_removed": names, "source": text, "chosen_score": Value("float64"),
            "rejected_score": Value("float64"), "rejected_images": images, "corruption": text}


def _recorded_images_root(path: Path) -> Path | None:
    stats_file = path.parent / "stats.json"
    try:
        stats = json.loads(stats_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(stats, dict) and stats.get("pairs_file") == path.name and stats.get("images_root"):
        return Path(stats["images_root"])
    return None
