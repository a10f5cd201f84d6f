"""The four pair strategies, one method each (pairs.py drives them; pure, no I/O).

Every text edit is checked by extracting the mentions of the result again: a pair is only kept when the
rejected side mentions exactly the objects it was meant to (the inserted one added, the swapped one
replaced, the omitted one gone), so the hallucination labels in the record are facts, not intentions.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterator

from data_prep.annotations import GroundedImage
from data_prep.corrupt import draw_corruption
from data_prep.objstats import ObjectStats, pick_weighted
from data_prep.pairstats import MiningStats, words
from data_prep.textedit import article_for, insert_object, pluralize, remove_object, swap_object

EDITS = ("insert", "swap", "omit")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


@dataclass(frozen=True)
class MiningOptions:
    prompt: str = "Describe the image."
    edit_mix: dict = field(default_factory=lambda: {"insert": 1.0, "swap": 1.0, "omit": 1.0})
    absent_from: str = "cooccur"  # cooccur | popular | random
    # which present object inject's omit edit drops: any (random), the one the others predict most
    # (cooccur), or the one the model's own responses (rank/correct's) most often name where it is absent
    # (habit). The last two mirror the insertions and corrections: the objects DPO learns not to add where
    # absent are the ones it must keep naming where present, or it learns to avoid the word, not to look
    omit_from: str = "random"  # cooccur | habit | random
    # the texts inject edits: GT captions (then one composed from the boxes), or first the model's own
    # responses that name only present objects (on-policy text: the edits then sit where the model's own
    # decisions are, as correct's do), then the captions
    inject_from: str = "captions"  # captions | responses
    top_k: int = 3  # draw the absent object among the k best candidates, weighted by score
    per_image: int = 1  # pairs per image and strategy (different captions / responses where possible)
    compose: bool = True  # compose a caption from the annotations when no GT caption is grounded
    margin: float = 0.5  # rank: minimum score difference between chosen and rejected
    hallucination_weight: float = 1.0  # rank score = coverage - weight * hallucinated objects
    # rank score also subtracts repeat_weight * repeated mentions (an object named again), and with a weight
    # > 0 correct never corrects a response that names an object twice: sampled captions that repeat a
    # present object instead of naming an absent one would otherwise win as chosen sides and teach the
    # repetition (0 by default: on COCO "a man ... the man" is a fine caption)
    repeat_weight: float = 0.0
    length_match: float | None = None  # keep pairs with max(c/r, r/c) <= 1 + length_match (words)
    corruptions: tuple = ("crop", "noise", "blur", "mask")
    images_dir: str = "pair_images"  # image strategy: rejected images, relative to the pairs file
    # how mentions are found: "fixed" reads the words as written (CHAIR's "reference" mode keeps the
    # reference code's bugs, e.g. it never sees "bus"; right for scoring, wrong for labelling edits)
    mention_mode: str = "fixed"
    question_template: str = "Is there {article} {object} in the image?"   # qa: POPE's wording
    # qa: "both" asks about a present and an absent object per image; "one" asks one of the two (a seeded
    # coin per image), half the pairs for the same balance of Yes and No
    qa_questions: str = "both"
    # qa: which present object the present-side question asks about, chosen as omit_from chooses the object
    # the omit edit drops: random, cooccur or habit. Caption DPO teaches "do not name X where absent" for the
    # kinds the model adds from habit, and the yes/no answers about those kinds drift to "No" where they
    # are there; habit rehearses "Yes." on exactly those kinds
    qa_present_from: str = "random"  # cooccur | habit | random
    # qa: replay instead of preference. rejected = chosen, so DPO's sigmoid term has nothing to push (its
    # logit is 0) and only the SFT term of loss_type [sigmoid, sft] learns the true answer: the SFT task
    # is rehearsed, not re-ranked (on the demo it kept POPE better than qa preference pairs did)
    qa_replay: bool = False
    # correct: also name the present objects a response leaves out (chosen = the response made right both
    # ways), and correct responses that only leave objects out. Removal alone makes the chosen side shorter
    # than the rejected one, and DPO then learns to stop early (the demo lost recall that way; completed,
    # it kept recall and lost POPE F1 instead, so the demo does not complete)
    correct_complete: bool = False
    # correct: only correct responses whose correction still names every present object (the chosen side is
    # then a complete caption). The correction's chosen side also trains DPO's sft term, and about half of
    # the demo's sampled captions that name an absent object also leave a present one out: corrected, they
    # teach the model to leave it out. Without completing anything, so the chosen text stays the model's own
    correct_only_complete: bool = False


class Miner:
    def __init__(self, vocab, extract: Callable, options: MiningOptions, seed: int, stats: MiningStats,
                 object_stats: ObjectStats | None, responses: dict[str, list[str]] | None = None,
                 answers: dict[str, dict[tuple[str, str], list[str]]] | None = None,
                 habits: dict[str, int] | None = None):
        self.vocab, self.extract, self.o, self.seed, self.stats = vocab, extract, options, seed, stats
        self.objstats = object_stats
        self.responses = responses or {}
        self.answers = answers
        self.habits = habits or {}   # object -> responses naming it where absent (omit_from: habit)
        self.universe = tuple(vocab.objects)
        self.singular = frozenset(f.lower() for forms in vocab.synonyms.values() for f in forms) | frozenset(
            o.lower() for o in vocab.objects)
        self._surfaces: dict[str, str | None] = {}
        self._unsayable: frozenset[str] | None = None
        self.popular = [(o, float(n)) for o, n in sorted(object_stats.images.items(), key=lambda kv: (-kv[1], kv[0]))
                        ] if object_stats else []
        total = sum(options.edit_mix.values())
        self.edit_mix = [(e, w / total) for e, w in options.edit_mix.items() if w > 0]
        self.edit_weights = dict(self.edit_mix)

    # ------------------------------------------------------------------------------------ helpers
    def rng(self, strategy: str, image: GroundedImage, k: int) -> random.Random:
        # seeded per image: excluding or adding images never changes another image's random draws
        return random.Random(f"{self.seed}|{strategy}|{image.image_id}|{k}")

    def objects(self, text: str) -> tuple[list, set[str]]:
        ms = self.extract(text)
        return ms, {m.object for m in ms}

    @staticmethod
    def count_habits(images, responses: dict[str, list[str]], extract: Callable) -> dict[str, int]:
        """object -> how many responses name it where the annotations say it is absent."""
        counts: dict[str, int] = {}
        for image in images:
            truth = image.object_names
            for text in responses.get(str(image.image_id), ()):
                for o in {m.object for m in extract(text)} - truth:
                    counts[o] = counts.get(o, 0) + 1
        return counts

    def surface(self, name: str) -> str | None:
        """A written form of `name` that the extractor maps back to it ("dining table", "moon")."""
        if name not in self._surfaces:
            forms = [name] + [f for f in self.vocab.synonyms.get(name, ()) if f != name]
            self._surfaces[name] = next((f for f in forms if [m.object for m in self.extract(
                f"{article_for(f)} {f}")] == [name]), None)
        return self._surfaces[name]

    def unsayable(self) -> frozenset[str]:
        """Objects with no written form the extractor recognises (never inserted: unverifiable)."""
        if self._unsayable is None:
            self._unsayable = frozenset(o for o in self.universe if not self.surface(o))
        return self._unsayable

    def absent(self, present: set[str], rng: random.Random) -> str | None:
        """The absent object to put in: the one the present objects make most tempting (co-occurrence),
        the most frequent one (popularity), or any (random)."""
        blocked = present
        how = self.o.absent_from
        if how == "cooccur" and self.objstats is not None:
            ranked = self.objstats.tempting(frozenset(present), blocked | self.unsayable(), self.o.top_k)
            pick = pick_weighted(rng, ranked, self.o.top_k)
            if pick is not None:
                return pick
            how = "popular"  # nothing co-occurs with these objects: fall back to popularity
        if how == "popular" and self.popular:
            pick = pick_weighted(rng, [(o, s) for o, s in self.popular if o not in blocked and self.surface(o)],
                                 self.o.top_k)
            if pick is not None:
                return pick
        pool = [o for o in self.universe if o not in blocked and self.surface(o)]
        return rng.choice(pool) if pool else None

    def grounded_texts(self, image: GroundedImage, rng: random.Random) -> Iterator[tuple[str, list, set, str]]:
        """GT captions that mention only annotated objects (and at least one), in a seeded order; then a
        caption composed from the annotations. Captions naming an absent object are never a chosen side."""
        present = image.object_names
        captions = list(dict.fromkeys(image.captions))
        rng.shuffle(captions)
        if self.o.inject_from == "responses":
            own = list(dict.fromkeys(self.responses.get(str(image.image_id), ())))
            rng.shuffle(own)
            for text in own:
                ms, objs = self.objects(text)
                if objs and objs <= present:
                    yield text, ms, objs, "response"
        for text in captions:
            ms, objs = self.objects(text)
            if objs and objs <= present:
                yield text, ms, objs, "caption"
        if self.o.compose and present:
            text = self.compose(image)
            ms, objs = self.objects(text)
            if objs and objs <= present:
                yield text, ms, objs, "composed"

    def compose(self, image: GroundedImage) -> str:
        """"Two dogs, a cat and a car." from the boxes (at most 6 kinds, most boxed first)."""
        counts: dict[str, int] = {}
        for o in image.objects:
            counts[o.name] = counts.get(o.name, 0) + 1
        parts = []
        for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:6]:
            noun = self.surface(name) or name
            parts.append(f"{article_for(noun)} {noun}" if n == 1 else f"{NUMBER_WORDS.get(n, 'many')} {pluralize(noun)}")
        text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        return text[:1].upper() + text[1:] + "."

    def length_ok(self, chosen: str, rejected: str) -> bool:
        if self.o.length_match is None:
            return True
        c, r = max(words(chosen), 1), max(words(rejected), 1)
        return max(c / r, r / c) <= 1 + self.o.length_match + 1e-9

    def record(self, image, strategy, edit, chosen, rejected, *, chosen_h=(), rejected_h=(), added=(), removed=(),
               source, scores=(None, None), rejected_images=(), corruption=None, prompt: str | None = None) -> dict:
        return {
            "image_id": image.image_id, "images": [image.file_name],
            "prompt": [{"role": "user", "content": [{"type": "image"},
                                                    {"type": "text", "text": prompt or self.o.prompt}]}],
            "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
            "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
            "strategy": strategy, "chosen_hallucinated": list(chosen_h), "rejected_hallucinated": list(rejected_h),
            "edit": edit, "objects_added": list(added), "objects_removed": list(removed), "source": source,
            "chosen_score": scores[0], "rejected_score": scores[1], "rejected_images": list(rejected_images),
            "corruption": corruption,
        }

    # ------------------------------------------------------------------------------------ inject
    def inject(self, image: GroundedImage) -> Iterator[dict]:
        gen = self.grounded_texts(image, self.rng("inject", image, 0))
        texts = list(islice(gen, self.o.per_image))  # lazily: extracting every caption costs seconds
        if not texts:
            self.stats.skip("inject: no grounded caption")
            return
        for k in range(self.o.per_image):
            rng = self.rng("inject", image, k)
            base = texts[k % len(texts)]
            first = self.draw_edit(rng)
            # a failed edit falls back to the length-neutral swap first, so that the mix of inserts
            # (rejected longer) and omissions (rejected shorter) stays as asked
            order = [first] + [e for e in ("swap", "insert", "omit") if e != first and e in self.edit_weights]
            for edit in order:
                text, ms, objs, source = base
                if edit == "omit" and len(objs) < 2:  # omission needs a caption naming two objects
                    found = next((t for t in texts if len(t[2]) >= 2), None)
                    while found is None:
                        nxt = next(gen, None)
                        if nxt is None:
                            break
                        texts.append(nxt)
                        found = nxt if len(nxt[2]) >= 2 else None
                    if found is None:
                        continue
                    text, ms, objs, source = found
                rec = getattr(self, f"edit_{edit}")(image, text, ms, objs, source, rng)
                if rec is not None and not self.length_ok(text, rec["rejected"][0]["content"][0]["text"]):
                    self.stats.skip(f"inject: {edit} length mismatch")
                    rec = None
                if rec is not None:
                    if edit != first:
                        self.stats.skip(f"inject: {first} not possible, used {edit}")
                    yield rec
                    break
            else:
                self.stats.skip("inject: no edit possible")

    # ------------------------------------------------------------------------------------ qa
    def qa(self, image: GroundedImage) -> Iterator[dict]:
        """POPE-form yes/no pairs: "Is there a <present object>?" Yes > No, and "Is there a <absent object>?"
        No > Yes, the absent one the most tempting by co-occurrence (POPE's adversarial negative). Caption
        pairs alone leave the yes/no skill to drift during DPO; these keep it, and train the same
        "not there" decision where the model is most tempted."""
        if self.answers is not None:
            yield from self.qa_on_policy(image)
            return
        present = sorted(o for o in image.object_names if self.surface(o))
        if not present:
            self.stats.skip("qa: no nameable object")
            return
        for k in range(self.o.per_image):
            rng = self.rng("qa", image, k)
            obj = self.pick_present(present, rng, self.o.qa_present_from, present[rng.randrange(len(present))])
            # "both": the present question, then the absent one; "one": a coin picks which of the two
            sides = ("present", "absent") if self.o.qa_questions == "both" else \
                (("present",) if rng.random() < 0.5 else ("absent",))
            if "present" in sides:
                yield self.record(image, "qa", "present", "Yes.", "Yes." if self.o.qa_replay else "No.",
                                  source="annotations", prompt=self.question(obj))
            if "absent" not in sides:
                continue
            absent = self.absent(image.object_names, rng)
            if absent is None:
                self.stats.skip("qa: no absent object")
                continue
            replay = self.o.qa_replay
            yield self.record(image, "qa", "absent", "No.", "No." if replay else "Yes.",
                              rejected_h=[] if replay else [absent], source="annotations",
                              prompt=self.question(absent))

    def qa_on_policy(self, image: GroundedImage) -> Iterator[dict]:
        """The model's own mistakes: every question about the image it answered wrong at least once among its
        samples becomes true answer > wrong answer (RLAIF-V's on-policy feedback, for yes/no). Questions
        it always answers right teach nothing and are skipped; the truth comes from the annotations, not
        from the question file's label."""
        from reward.pope import parse_pope_answer

        asked = self.answers.get(str(image.image_id))
        if not asked:
            self.stats.skip("qa: no answers for the image")
            return
        for (question, obj), replies in asked.items():
            truth = "yes" if obj in image.object_names else "no"
            if all(parse_pope_answer(r) == truth for r in replies):
                self.stats.skip("qa: always answered right")
                continue
            yes = truth == "yes"
            yield self.record(image, "qa", "present" if yes else "absent", "Yes." if yes else "No.",
                              "No." if yes else "Yes.", rejected_h=[] if yes else [obj], source="answers",
                              prompt=question)

    def question(self, name: str) -> str:
        noun = self.surface(name)
        return self.o.question_template.format(article=article_for(noun), object=noun)

    def draw_edit(self, rng: random.Random) -> str:
        x = rng.random()
        for edit, w in self.edit_mix:
            x -= w
            if x < 0:
                return edit
        return self.edit_mix[-1][0]

    def edit_insert(self, image, text, ms, objs, source, rng):
        new = self.absent(image.object_names, rng)
        if new is None:
            return None
        rejected = insert_object(text, ms, self.surface(new), rng)
        if self.objects(rejected)[1] != objs | {new}:
            self.stats.skip("inject: insert edit failed the check")
            return None
        return self.record(image, "inject", "insert", text, rejected, rejected_h=[new], added=[new], source=source)

    def edit_swap(self, image, text, ms, objs, source, rng):
        old = rng.choice(sorted(objs))
        new = self.absent(image.object_names, rng)
        if new is None:
            return None
        rejected = swap_object(text, ms, old, self.surface(new), self.singular)
        if rejected is None or self.objects(rejected)[1] != (objs - {old}) | {new}:
            self.stats.skip("inject: swap edit failed the check")
            return None
        return self.record(image, "inject", "swap", text, rejected, rejected_h=[new], added=[new], removed=[old],
                           source=source)

    def edit_omit(self, image, text, ms, objs, source, rng):
        if len(objs) < 2:
            return None  # dropping the only object leaves nothing to describe
        old = self.pick_present(objs, rng, self.o.omit_from, rng.choice(sorted(objs)))
        rejected = remove_object(text, old, self.extract)
        if rejected is None or self.objects(rejected)[1] != objs - {old}:
            self.stats.skip("inject: omit edit failed the check")
            return None
        return self.record(image, "inject", "omit", text, rejected, removed=[old], source=source)

    def pick_present(self, objs, rng: random.Random, how: str, drawn: str) -> str:
        """A present object: `drawn` (already drawn at random), or the one the others predict most (cooccur),
        or the one the model's responses most often name where it is absent (habit), each among the top-k
        by weight; `drawn` where no object has a weight."""
        if how == "cooccur" and self.objstats is not None:
            return pick_weighted(rng, self.objstats.expected(set(objs), self.o.top_k), self.o.top_k) or drawn
        if how == "habit":
            habitual = sorted(((o, float(self.habits.get(o, 0))) for o in objs), key=lambda t: (-t[1], t[0]))
            return pick_weighted(rng, [t for t in habitual if t[1] > 0], self.o.top_k) or drawn
        return drawn

    # ------------------------------------------------------------------------------------ rank
    def score(self, text: str, truth: set[str]) -> tuple[float, list[str]]:
        """coverage - weight * distinct hallucinated objects, from reward/'s grounded stats (AMBER's
        Cover and CHAIR); returns the score and the hallucinated objects in response order."""
        from reward.grounded import response_stats

        s = response_stats(text, truth, self.vocab, self.o.mention_mode)
        hallucinated = list(dict.fromkeys(s["hallucinated"]))
        repeats = len(s["mentioned"]) - len(set(s["mentioned"]))
        return round(s["coverage"] - self.o.hallucination_weight * len(hallucinated)
                     - self.o.repeat_weight * repeats, 6), hallucinated

    def rank(self, image: GroundedImage) -> Iterator[dict]:
        texts = list(dict.fromkeys(self.responses.get(str(image.image_id), ())))
        if len(texts) < 2:
            self.stats.skip("rank: fewer than 2 distinct responses")
            return
        truth = image.object_names
        scored = [(t, *self.score(t, truth)) for t in texts]
        rng = self.rng("rank", image, 0)
        rng.shuffle(scored)  # ties are broken by this seeded order, not by file order
        candidates = []
        for i, (ct, cs, ch) in enumerate(scored):
            for j, (rt, rs, rh) in enumerate(scored):
                if i != j and cs - rs >= self.o.margin - 1e-9:
                    ratio = max(words(ct), 1) / max(words(rt), 1)
                    candidates.append((-(cs - rs), abs(math.log(ratio)), i, j))
        if not candidates:
            self.stats.skip("rank: score margin below threshold")
            return
        if self.o.length_match is not None:
            candidates = [c for c in candidates if self.length_ok(scored[c[2]][0], scored[c[3]][0])]
            if not candidates:
                self.stats.skip("rank: no length-matched pair")
                return
        candidates.sort()
        used = set()
        n = 0
        for _, _, i, j in candidates:  # best margin first; per_image pairs without reusing a response
            if n == self.o.per_image or i in used or j in used:
                continue
            used.update((i, j))
            (ct, cs, ch), (rt, rs, rh) = scored[i], scored[j]
            added = [o for o in rh if o not in ch]
            yield self.record(image, "rank", "rank", ct, rt, chosen_h=ch, rejected_h=rh, added=added,
                              source="response", scores=(cs, rs))
            n += 1

    # ------------------------------------------------------------------------------------ correct
    def correct(self, image: GroundedImage) -> Iterator[dict]:
        truth = image.object_names
        source = "response" if self.responses else "caption"
        texts = list(dict.fromkeys(self.responses.get(str(image.image_id), ()) if self.responses else image.captions))
        rng = self.rng("correct", image, 0)
        rng.shuffle(texts)
        sayable = sorted(o for o in truth if o not in self.unsayable())
        n = 0
        for text in texts:
            if n == self.o.per_image:
                break
            ms, objs = self.objects(text)
            if self.o.repeat_weight > 0 and len(ms) > len(objs):
                self.stats.skip("correct: names an object twice")
                continue
            hallucinated = [o for o in dict.fromkeys(m.object for m in ms) if o not in truth]
            missing = [o for o in sayable if o not in objs] if self.o.correct_complete else []
            if not hallucinated and not missing:
                continue
            fixed = text
            for o in hallucinated:
                fixed = remove_object(fixed, o, self.extract) if fixed is not None else None
            left = self.objects(fixed)[1] if fixed is not None else set()
            if not left:
                self.stats.skip("correct: nothing left after removing the hallucinations")
                continue
            for o in missing:   # appended to the list, as inject's insert edit does
                fixed = insert_object(fixed, self.extract(fixed), self.surface(o), rng)
            left = self.objects(fixed)[1]
            if self.o.correct_only_complete and not set(sayable) <= left:   # (a completed one always is)
                self.stats.skip("correct: the correction leaves a present object out")
                continue
            if not left <= truth or not set(missing) <= left:
                self.stats.skip("correct: correction failed the check")
                continue
            if not self.length_ok(fixed, text):
                self.stats.skip("correct: length mismatch")
                continue
            yield self.record(image, "correct", "complete" if missing else "correct", fixed, text,
                              rejected_h=hallucinated, added=hallucinated, removed=missing, source=source)
            n += 1
        if n == 0 and not texts:
            self.stats.skip("correct: no text to correct")

    # ------------------------------------------------------------------------------------ image
    def image_pairs(self, image: GroundedImage) -> Iterator[dict]:
        texts = None
        for k in range(self.o.per_image):
            rng = self.rng("image", image, k)
            if texts is None:
                texts = list(islice(self.grounded_texts(image, rng), self.o.per_image))
                if not texts:
                    self.stats.skip("image: no grounded caption")
                    return
            text, ms, objs, source = texts[k % len(texts)]
            kinds = list(self.o.corruptions)
            kind = rng.choice(kinds)
            boxed = [o for o in image.objects if o.bbox is not None and o.name in objs and o.bbox[2] * o.bbox[3] > 0]
            if kind == "mask" and not boxed:
                others = [c for c in kinds if c != "mask"]
                if not others:
                    self.stats.skip("image: no box to mask")
                    continue
                kind = rng.choice(others)
            if kind == "mask":
                target = rng.choice(boxed)
                spec = draw_corruption("mask", rng, box=target.bbox, obj=target.name)
                hidden = [] if sum(o.name == target.name for o in image.objects) > 1 else [target.name]
            else:
                spec, hidden = draw_corruption(kind, rng), []
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(image.image_id))
            rel = f"{self.o.images_dir}/{safe}_{k}_{kind}.png"
            yield self.record(image, "image", kind, text, text, rejected_h=hidden, source=source,
                              rejected_images=[rel], corruption=spec)
