"""Fluent object edits on captions: insert an object, swap one for another, remove one.

The edits work on the object mentions that reward/'s extractor finds (CHAIR's machinery), so they
understand exactly the words the scorer will count. They are rule-based and deliberately small:
- a mention grows into its noun phrase backwards over adjectives up to a determiner
  ("a blue crescent moon", "two dogs"), never over a verb or a preposition;
- insertion extends the last noun phrase into a list ("A red star and a blue moon" ->
  "A red star, a blue moon and a green heart");
- removal takes the phrase with the connector that ties it to a neighbouring phrase ("A man riding a
  horse next to a dog" minus horse -> "A man next to a dog"), or the whole sentence when it names
  nothing else; lists are repaired ("A, B and C" minus C -> "A and B");
- swapping replaces the noun, keeping number and capitalisation and fixing "a"/"an".
Callers re-extract the mentions of the result and drop an edit that did not do exactly what it meant
to (pairs.py does), so a clumsy sentence can cost a pair but never mislabel one.
"""
from __future__ import annotations

import random
import re
from typing import Callable, Sequence

DETERMINERS = frozenset(
    "a an the one two three four five six seven eight nine ten several some many few another "
    "his her their its my your our this that these those each every both multiple".split())
# words that end a noun phrase when scanning backwards: prepositions, conjunctions, verbs of being
STOPWORDS = frozenset(
    "and or but with without next to of on in at by near beside besides behind above below under over "
    "is are was were be being been there it as from into onto for while where which who that than "
    "also then has have having".split())
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "white", "black", "pink", "brown", "grey",
           "gray", "cyan", "magenta")
_COLOUR_SET = frozenset(COLOURS)
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+")
_SENTENCE_END = re.compile(r"[.!?]+(?:\s+|$)")
_CONNECTOR_MAX_WORDS = 4


def article_for(word: str) -> str:
    w = word.lower()
    if w.startswith(("uni", "use", "usu", "one", "eu", "ewe", "uk")):
        return "a"
    if w.startswith(("hour", "honest", "honor", "honour", "heir")):
        return "an"
    return "an" if w[:1] in "aeiou" else "a"


_IRREGULAR_PLURALS = {"person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
                      "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors",
                      "glasses": "glasses", "foot": "feet", "tooth": "teeth", "leaf": "leaves"}


def pluralize(noun: str) -> str:
    head, _, last = noun.rpartition(" ")
    low = last.lower()
    if low in _IRREGULAR_PLURALS:
        plural = _IRREGULAR_PLURALS[low]
    elif low.endswith(("s", "x", "z", "ch", "sh")):
        plural = last + "es"
    elif low.endswith("y") and low[-2:-1] not in ("a", "e", "i", "o", "u"):
        plural = last[:-1] + "ies"
    else:
        plural = last + "s"
    return f"{head} {plural}" if head else plural


def _match_case(new: str, old: str) -> str:
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each sentence, end including its punctuation (not the following blanks)."""
    spans, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        end = m.start() + len(m.group().rstrip())
        if text[start:end].strip():
            spans.append((start, end))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def noun_phrase(text: str, start: int, end: int, floor: int = 0) -> tuple[int, int]:
    """Grow the mention text[start:end] backwards to its determiner over at most 3 adjective-like words
    ("a blue crescent moon", "two small dogs"), never past `floor` (the previous mention's end), a
    punctuation mark or a stop word. Without a determiner only colour words directly in front are taken."""
    words = list(_WORD.finditer(text, floor, start))
    cursor, taken = start, 0
    for m in reversed(words):
        if text[m.end():cursor].strip():  # punctuation in between
            break
        w = m.group().lower()
        if w in DETERMINERS or w.isdigit():
            return m.start(), end
        if taken == 3 or w in STOPWORDS:
            break
        taken += 1
        cursor = m.start()
    ns = start
    for m in reversed(words):
        if m.group().lower() in _COLOUR_SET and not text[m.end():ns].strip():
            ns = m.start()
        else:
            break
    return ns, end


class Phrase:
    """One object's noun phrase in a caption."""

    __slots__ = ("object", "start", "end", "m_start", "m_end", "surface")

    def __init__(self, text: str, mention, floor: int = 0):
        self.object, self.m_start, self.m_end = mention.object, mention.start, mention.end
        self.surface = text[mention.start:mention.end]
        self.start, self.end = noun_phrase(text, mention.start, mention.end, floor)

    def __repr__(self) -> str:
        return f"Phrase({self.object!r}, {self.start}, {self.end})"


def _phrases(text: str, mentions) -> list[Phrase]:
    out: list[Phrase] = []
    for m in sorted(mentions, key=lambda m: m.start):
        out.append(Phrase(text, m, out[-1].end if out else 0))
    return out


def _connector(text: str, a_end: int, b_start: int) -> str | None:
    """The text tying two phrases, if it is short and inside one sentence."""
    gap = text[a_end:b_start]
    if re.search(r"[.!?;:]", gap) or len(_WORD.findall(gap)) > _CONNECTOR_MAX_WORDS:
        return None
    return gap


def _is_and(gap: str) -> bool:
    return gap.strip(" ,") == "and"


# ----------------------------------------------------------------------------------------- insert
def noun_phrase_for(noun: str, rng: random.Random | None = None, colour: bool = False) -> str:
    """'a star', 'an orange heart' (colour from rng when asked)."""
    words = noun
    if colour and rng is not None:
        words = f"{rng.choice(COLOURS[:8])} {noun}"
    return f"{article_for(words)} {words}"


def insert_object(text: str, mentions: Sequence, noun: str, rng: random.Random) -> str:
    """Add "a/an NOUN" to the caption next to its last object phrase (a new sentence if it has none)."""
    phrases = _phrases(text, mentions)
    if not phrases:
        body = text.rstrip()
        end = "" if body.endswith((".", "!", "?")) else "."
        return f"{body}{end} There is also {noun_phrase_for(noun)}."
    last = phrases[-1]
    # match the caption's style: if its phrases carry colours, so does the new one
    coloured = any(w.lower() in _COLOUR_SET for w in _WORD.findall(text[last.start:last.end]))
    new = noun_phrase_for(noun, rng, coloured)
    prev = phrases[-2] if len(phrases) > 1 else None
    if prev is not None:
        gap = _connector(text, prev.end, last.start)
        if gap is not None and _is_and(gap):  # "A and B" -> "A, B and C"
            return text[:prev.end] + ", " + text[last.start:last.end] + " and " + new + text[last.end:]
    return text[:last.end] + " and " + new + text[last.end:]


# ----------------------------------------------------------------------------------------- swap
def swap_object(text: str, mentions: Sequence, old: str, noun: str, singular_forms: frozenset) -> str | None:
    """Replace every mention of object `old` by `noun` (number and case kept, a/an fixed)."""
    targets = sorted((m for m in mentions if m.object == old), key=lambda m: m.start, reverse=True)
    if not targets:
        return None
    for m in targets:
        surface = text[m.start:m.end]
        plural = surface.lower() not in singular_forms
        new = _match_case(pluralize(noun) if plural else noun, surface)
        before = text[:m.start]
        art = re.search(r"\b(a|an|A|An)(\s+)$", before)
        if art and not plural:
            a = article_for(new)
            a = a.capitalize() if art.group(1)[0].isupper() else a
            before = before[:art.start(1)] + a + art.group(2)
        text = before + new + text[m.end:]
    return text


# ----------------------------------------------------------------------------------------- remove
def remove_object(text: str, name: str, extract: Callable[[str], Sequence]) -> str | None:
    """Remove every mention of object `name` with its phrase, keeping the rest fluent.

    `extract(text)` gives the mentions (reward.chair.extract_mentions with the vocabulary bound); they
    are found again after each removal. None if the caption would be left empty or stuck.
    """
    for _ in range(16):
        phrases = _phrases(text, extract(text))
        targets = [p for p in phrases if p.object == name]
        if not targets:
            return _tidy(text) if text.strip() else None
        edited = _remove_phrase(text, phrases, targets[-1])
        if edited is None or edited == text:
            return None
        text = edited
    return None


def _remove_phrase(text: str, phrases: list[Phrase], target: Phrase) -> str | None:
    sentences = sentence_spans(text)
    s_start, s_end = next(((a, b) for a, b in sentences if a <= target.start < b), (0, len(text)))
    same = [p for p in phrases if s_start <= p.start < s_end]
    i = same.index(target)
    prev = same[i - 1] if i > 0 else None
    nxt = same[i + 1] if i + 1 < len(same) else None
    if prev is not None and prev.object != target.object:
        gap = _connector(text, prev.end, target.start)
        if gap is not None:
            out = text[:prev.end] + text[target.end:]
            if _is_and(gap) and i >= 2:  # "A, B and C" minus C: "A, B" -> "A and B"
                pp = same[i - 2]
                g2 = text[pp.end:prev.start]
                if g2.strip() == ",":
                    out = out[:pp.end] + " and " + out[prev.start:]
            return out
    if nxt is not None and nxt.object != target.object:
        gap = _connector(text, target.end, nxt.start)
        if gap is not None:
            out = text[:target.start] + text[nxt.start:]
            if not text[s_start:target.start].strip():  # the phrase opened the sentence
                out = out[:target.start] + out[target.start:target.start + 1].upper() + out[target.start + 1:]
            return out
    # the phrase stands alone in its sentence (or is tied by a long clause): drop the sentence
    if len(sentences) <= 1:
        return None
    return (text[:s_start].rstrip() + " " + text[s_end:].lstrip()).strip()


def _tidy(text: str) -> str:
    text = re.sub(r"\s+([,.!?])", r"\1", text)
    text = re.sub(r",\s*,", ",", text)
    text = re.sub(r"\s{2,}", " ", text).strip()
    # "There are a star and a moon." minus the moon: "There are a star." -> "There is a star."
    text = _THERE_ARE_ONE.sub(lambda m: m.group(1) + ("is" if m.group(2) == "are" else "Is"), text)
    return text[:1].upper() + text[1:]


_THERE_ARE_ONE = re.compile(r"\b([Tt]here )(are|Are)(?= (?:an?|one) [^.!?,]*?[.!?]|$)(?![^.!?]* and )")
