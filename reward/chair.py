"""CHAIR (Rohrbach et al. 2018): object mentions in captions, ground truth, CHAIR_s / CHAIR_i / recall.

mode="reference" reproduces LisaAnne/Hallucination utils/chair.py caption by caption:
  lowercase -> nltk 3.2.5 word_tokenize (reward/text.py) -> Pattern 3.6 singularize on EVERY token
  (reward/singular.py) -> merge two-word phrases greedily left to right -> drop every "seat" when "toilet"
  is also there -> keep the words listed in the synonym table, mapped to their object.
  With the COCO vocabulary the phrase list is the reference's: its `coco_double_words`, "baby"/"adult" +
  an animal word (the animal), "passenger" + jet/train (the vehicle), "bow tie" -> tie, "toilet seat" ->
  toilet, "wine glas" -> wine glass (Pattern turns "glass" into "glas"). Any other vocabulary gets its own
  multi-word forms as phrases (longest first), and its forms are matched both as written and singularized,
  so "stars" and "crescent moons" are found.
mode="fixed" keeps the pipeline but repairs the reference's known bugs: a token that is a vocabulary word
  (or a regular plural of one) is used as written instead of Pattern's singular ("bus", "buses", "glass",
  "ties", "tennis", "sports"), forms are lowercased and stripped (" motor bike", " cheesecake", "iPhone"
  match), "motor bike" and three-word forms ("stove top oven") merge.

Counting is the reference's: every mention counts, duplicates included; CHAIR_i pools mentions over all
captions; CHAIR_s counts every caption (also those that mention nothing). Rates come from integer counts.
"""
from __future__ import annotations

import gc
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from reward.files import InputError
from reward.singular import singularize
from reward.text import token_spans, word_tokenize
from reward.vocab import Vocabulary, load_vocabulary

MODES = ("reference", "fixed")

# ---------------------------------------------------------------- the reference's hard-coded COCO rules
COCO_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal", "stop light",
    "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball", "baseball bat",
    "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone", "mobile phone", "teddy bear",
    "hair drier", "potted plant", "bow tie", "laptop computer", "stove top oven", "home plate", "train track")
# "baby bird" is a bird, not a person ("baby" and "adult" are person synonyms).
ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal",
                "cub")
# "passenger jet" is a jet, not a person.
VEHICLE_WORDS = ("jet", "train")


def _coco_double_words() -> dict[str, str]:
    table = {w: w for w in COCO_DOUBLE_WORDS}
    for animal in ANIMAL_WORDS:
        table[f"baby {animal}"] = animal
        table[f"adult {animal}"] = animal
    for vehicle in VEHICLE_WORDS:
        table[f"passenger {vehicle}"] = vehicle
    table["bow tie"] = "tie"
    table["toilet seat"] = "toilet"
    table["wine glas"] = "wine glass"
    return table


class Mention(NamedTuple):
    """One object mention: the word as CHAIR sees it, its object, and where it was written."""
    surface: str  # after lowercasing, singularizing and phrase merging ("hot dog", "ski", "wine glass");
                  # with a non-COCO vocabulary, the listed form that matched ("star", "crescent moon")
    object: str   # canonical object name
    start: int    # text[start:end] is what was written ("Stars", "crescent moons", "Hot Dogs")
    end: int


class _Matcher:
    """A vocabulary compiled for one mode: how tokens become words, which phrases merge, what is an object."""

    def __init__(self, lemma: dict[str, str], phrases: dict[tuple[str, ...], str],
                 objects: dict[str, tuple[str, str]],
                 toilet_seat: bool):
        self.lemma = lemma        # fixed mode: vocabulary words and their plurals, used as written
        self.phrases = phrases    # word sequence -> the word it is merged into
        self.phrase_starts = frozenset(p[0] for p in phrases)
        self.max_phrase = max((len(p) for p in phrases), default=1)
        self.objects = objects    # word -> (canonical object, surface to report)
        self.interesting = frozenset(objects) | self.phrase_starts
        self.toilet_seat = toilet_seat  # drop every "seat" when "toilet" is among the words
        self.hits: dict[str, str] = {}  # token -> its word if an object word or phrase start, else ""
        if toilet_seat and "toilet" not in objects:
            raise ValueError("the toilet/seat rule needs 'toilet' among the object words")

    def word_of(self, token: str) -> str:
        """The word CHAIR compares: Pattern's singular (fixed mode: a vocabulary word stays as written)."""
        return self.lemma.get(token) or singularize(token)

    def learn(self, token: str) -> str:
        word = self.word_of(token)
        if len(self.hits) >= 1 << 17:  # bounded: a stream of unique tokens must not grow memory forever
            self.hits.clear()
        self.hits[token] = word if word in self.interesting else ""
        return self.hits[token]


def _is_coco(vocab: Vocabulary) -> bool:
    return set(vocab.objects) == set(load_vocabulary("coco").objects)


def _words_of(form: str) -> tuple[str, ...]:
    return tuple(tok for tok, _, _ in token_spans(" ".join(form.lower().split())))


def _regular_plurals(word: str) -> set[str]:
    """Plurals a fixed-mode token may have for a vocabulary word (irregular ones are Pattern's job)."""
    out = {word + "s"}
    if word.endswith(("s", "x", "z", "ch", "sh", "o")):
        out.add(word + "es")
    if len(word) > 1 and word.endswith("y") and word[-2] not in "aeiou":
        out.add(word[:-1] + "ies")
    if word.endswith("fe"):
        out.add(word[:-2] + "ves")
    elif word.endswith("f"):
        out.add(word[:-1] + "ves")
    return out


@lru_cache(maxsize=64)
def _compile(vocab: Vocabulary, mode: str) -> _Matcher:
    if mode not in MODES:
        raise ValueError(f"CHAIR mode must be one of {MODES}, not {mode!r}")
    coco = _is_coco(vocab)
    if coco and mode == "reference":
        # The synonym table as the reference reads it: raw forms, later lines win; pairs only.
        objects = {}
        for obj in vocab.objects:
            for form in vocab.synonyms[obj]:
                objects[form] = (vocab.synonyms[obj][0], form)
        # The reference joins two words at a time, so its three-word "stove top oven" can never merge.
        phrases = {tuple(k.split(" ")): v for k, v in _coco_double_words().items() if k.count(" ") == 1}
        return _Matcher({}, phrases, objects, True)

    objects: dict[str, tuple[str, str]] = {}
    phrases: dict[tuple[str, ...], str] = {}
    lemma: dict[str, str] = {}
    for obj in vocab.objects:
        for form in vocab.forms(obj):
            words = _words_of(form)
            if not words:
                continue
            surface = " ".join(words)
            variants = {words}
            if mode == "reference":
                variants.add(tuple(singularize(w) for w in words))  # tokens arrive singularized
            for variant in variants:
                if len(variant) == 1:  # "glas" (how "glass" arrives) is reported as "glass"
                    objects.setdefault(variant[0], (obj, surface))
                else:
                    phrases.setdefault(variant, surface)
            objects.setdefault(surface, (obj, surface))
            if mode == "fixed":
                for w in words:
                    lemma[w] = w
    if mode == "fixed":
        for w in list(lemma):
            for plural in _regular_plurals(w):
                lemma.setdefault(plural, w)
    if coco:  # fixed COCO: the reference's phrase rules, now with every target resolvable
        for k, v in _coco_double_words().items():
            if k == "wine glas":
                continue  # only needed because Pattern turns "glass" into "glas"
            phrases[tuple(k.split(" "))] = v
    return _Matcher(lemma, phrases, objects, coco)


def _lowercase_with_offsets(text: str) -> tuple[str, list[int] | None]:
    """text.lower() and, when lowering changed lengths ("İ" -> "i̇"), each lowered char's source index."""
    low = text.lower()
    if len(low) == len(text):
        return low, None
    origin: list[int] = []
    for i, ch in enumerate(text):
        origin.extend([i] * len(ch.lower()))
    return low, origin


def extract_mentions(text: str, vocab: Vocabulary | str = "coco", mode: str = "reference") -> list[Mention]:
    """Object mentions of `text` in caption order, duplicates kept (CHAIR's `caption_to_words`)."""
    low, origin = _lowercase_with_offsets(text)
    tokens = token_spans(low)
    found = _find_objects([tok for tok, _, _ in tokens], _compile(load_vocabulary(vocab), mode))
    out = []
    for obj, word, first, last in found:
        start, end = tokens[first][1], tokens[last][2]
        if origin is not None:
            start, end = origin[start], origin[end - 1] + 1
        out.append(Mention(word, obj, start, end))
    return out


def _find_objects(tokens: list[str], m: _Matcher) -> list[tuple[str, str, int, int]]:
    """(object, surface, first token, last token) for every object word of a tokenized, lowercased caption."""
    # Merge phrases greedily left to right (longest first). Only positions holding an object word or the
    # first word of a phrase can produce anything, so only those are visited; a merge consumes the words
    # it covers, exactly as the reference's word-by-word loop does. `m.hits` remembers, per token, its word
    # if that word matters ("" if not); tokens not seen before (True below) are looked at once.
    hit = m.hits.get
    candidates = [i for i, tok in enumerate(tokens) if hit(tok, True)]
    if not candidates:
        return []
    objects, phrases, starts, longest = m.objects, m.phrases, m.phrase_starts, m.max_phrase
    n = len(tokens)
    found: list[tuple[str, str, int, int]] = []
    consumed = 0
    for i in candidates:
        if i < consumed:
            continue
        word = hit(tokens[i])
        if not word:
            if word is None:  # first sight of this token
                word = m.learn(tokens[i])
            if not word:
                continue
        if word in starts:
            for size in range(min(longest, n - i), 1, -1):
                target = phrases.get((word, *map(m.word_of, tokens[i + 1:i + size])))
                if target is not None:
                    if target in objects:
                        found.append((*objects[target], i, i + size - 1))
                    consumed = i + size
                    break
            else:
                if word in objects:
                    found.append((*objects[word], i, i))
        else:
            found.append((*objects[word], i, i))
    if m.toilet_seat and len(found) > 1:
        # "the seat of the toilet" is not a chair: with "toilet" among the words, every "seat" goes.
        # ("toilet" is an object word of every matcher with this rule, so `found` shows whether it is there.)
        found_words = [f[1] for f in found]
        if "seat" in found_words and "toilet" in found_words:
            found = [f for f in found if f[1] != "seat"]
    return found


def _object_words(text: str, m: _Matcher) -> list[tuple[str, str, int, int]]:
    return _find_objects(word_tokenize(text.lower()), m)


def caption_objects(text: str, vocab: Vocabulary | str = "coco", mode: str = "reference") -> list[str]:
    """The objects `text` mentions, in order, duplicates kept (CHAIR's node words)."""
    return [obj for obj, _, _, _ in _object_words(text, _compile(load_vocabulary(vocab), mode))]


# ---------------------------------------------------------------- ground truth
def _category_object(name: str, vocab: Vocabulary, mode: str, record: str) -> str:
    obj = vocab.canonical(name)
    if obj is None:
        found = caption_objects(name, vocab, mode)
        if len(found) == 1:
            obj = found[0]
    if obj is None:
        raise InputError(f"category {name!r} is not an object of the {vocab.name!r} vocabulary", record=record,
                         fix="pass the --vocab that lists these categories (a JSON/YAML {canonical: [forms]} file)")
    return obj


def ground_truth_from_coco(instances: Mapping, captions: Mapping | None = None,
                           vocab: Vocabulary | str = "coco", mode: str = "reference") -> dict[Any, set[str]]:
    """Objects per image: instance categories (crowd included) ∪ objects found in the GT captions.

    `instances` / `captions` are parsed COCO instances_*.json / captions_*.json. Every image listed in
    either gets an entry (possibly empty).
    """
    vocab = load_vocabulary(vocab)
    names = {}
    for cat in instances.get("categories", []):
        names[cat["id"]] = _category_object(str(cat["name"]), vocab, mode, f"category {cat['id']}")
    truth: dict[Any, set[str]] = {img["id"]: set() for img in instances.get("images", [])}
    for k, ann in enumerate(instances.get("annotations", [])):
        cat = ann.get("category_id")
        if cat not in names:
            raise InputError(f"annotation refers to category {cat!r}, which 'categories' does not list",
                             record=f"annotations[{k}] (id {ann.get('id')})",
                             fix="use the categories list that belongs to these annotations")
        truth.setdefault(ann["image_id"], set()).add(names[cat])
    if captions is not None:
        for img in captions.get("images", []):
            truth.setdefault(img["id"], set())
        for ann in captions.get("annotations", []):
            truth.setdefault(ann["image_id"], set()).update(caption_objects(ann["caption"], vocab, mode))
    return truth


def ground_truth_from_records(records: Iterable[Mapping], vocab: Vocabulary | str = "coco",
                              mode: str = "reference") -> dict[Any, set[str]]:
    """Objects per image from DESIGN.md's JSONL annotations ({"image_id", "objects": [{"name"}], "captions"})."""
    vocab = load_vocabulary(vocab)
    truth: dict[Any, set[str]] = {}
    for k, rec in enumerate(records):
        objs = truth.setdefault(rec["image_id"], set())
        for o in rec.get("objects", []):
            name = o["name"] if isinstance(o, Mapping) else o
            objs.add(_category_object(str(name), vocab, mode, f"record {k} (image {rec['image_id']})"))
        for cap in rec.get("captions", []) or []:
            objs.update(caption_objects(cap, vocab, mode))
    return truth


def lookup_truth(ground_truth: Mapping, image_id: Any):
    """ground_truth[image_id], forgiving "42" vs 42; None when the image is not there at all."""
    if image_id in ground_truth:
        return ground_truth[image_id]
    alt = str(image_id) if not isinstance(image_id, str) else (int(image_id) if image_id.strip().lstrip("-").isdigit() else None)
    if alt is not None and alt in ground_truth:
        return ground_truth[alt]
    return None


# ---------------------------------------------------------------- scores
def _rate(num: int, den: int) -> float:
    return num / den if den else 0.0


def caption_text(rec: Mapping, index: Any = None) -> str:
    """The text of a caption record: "caption", else "response"."""
    for key in ("caption", "response"):
        value = rec.get(key)
        if isinstance(value, str):
            return value
    raise InputError("record has no text field 'caption' or 'response'", record=index if index is not None else None,
                     fix="give every record a 'caption' (or 'response') string")


def chair_scores(captions: Sequence[Mapping], ground_truth: Mapping, vocab: Vocabulary | str = "coco",
                 mode: str = "reference") -> dict:
    """CHAIR result (DESIGN.md): chair_s, chair_i, recall, counts and per_caption details, in input order.

    An image missing from `ground_truth` has no ground-truth objects (as in the reference).
    """
    vocab = load_vocabulary(vocab)
    matcher = _compile(vocab, mode)
    with _gc_paused():
        return _chair_scores(captions, ground_truth, vocab, matcher, mode)


@contextmanager
def _gc_paused():
    """The result holds a few small lists per caption and no cycles; the cyclic collector would otherwise
    rescan the growing result again and again (half the run time on a large corpus)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _chair_scores(captions: Sequence[Mapping], ground_truth: Mapping, vocab: Vocabulary, matcher: _Matcher,
                  mode: str) -> dict:
    per_caption = []
    n_hallucinated_captions = n_mentions = n_hallucinated = n_gt = n_gt_covered = 0
    truth_of: dict[Any, tuple[frozenset, tuple]] = {}  # image id -> (objects, objects sorted)
    for k, rec in enumerate(captions):
        text = rec.get("caption")
        if not isinstance(text, str):
            text = caption_text(rec, f"caption {k}")
        image_id = rec.get("image_id")
        try:
            truth, truth_sorted = truth_of[image_id]
        except KeyError:
            objs = frozenset(lookup_truth(ground_truth, image_id) or ())
            truth, truth_sorted = truth_of[image_id] = (objs, tuple(sorted(objs)))
        except TypeError:
            raise InputError(f"image_id is a {type(image_id).__name__}", record=f"caption {k}",
                             fix="use a string or a number as image_id") from None
        found = _object_words(text, matcher)
        if found:
            mentioned = [[word, obj] for obj, word, _, _ in found]
            hallucinated = [[word, obj] for obj, word, _, _ in found if obj not in truth]
            n_mentions += len(mentioned)
            if hallucinated:
                n_hallucinated += len(hallucinated)
                n_hallucinated_captions += 1
            if truth:
                n_gt_covered += len(truth.intersection([obj for obj, _, _, _ in found]))
        else:
            mentioned, hallucinated = [], []
        n_gt += len(truth)
        per_caption.append({"image_id": image_id, "caption": text, "mentioned": mentioned,
                            "hallucinated": hallucinated, "ground_truth": list(truth_sorted)})
    n_captions = len(per_caption)
    return {
        "chair_s": _rate(n_hallucinated_captions, n_captions),
        "chair_i": _rate(n_hallucinated, n_mentions),
        "recall": _rate(n_gt_covered, n_gt),
        "n_captions": n_captions,
        "n_mentions": n_mentions,
        "n_hallucinated": n_hallucinated,
        "n_hallucinated_captions": n_hallucinated_captions,
        "n_gt_objects": n_gt,
        "n_gt_mentioned": n_gt_covered,
        "mode": mode,
        "vocabulary": vocab.name,
        "per_caption": per_caption,
    }
