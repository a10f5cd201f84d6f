"""Sentence splitting exactly as nltk 3.2.5's `sent_tokenize` does it on LOWERCASED text, without nltk.

CHAIR lowercases a caption and then calls `nltk.word_tokenize`, which first splits the text into sentences
with the pre-trained Punkt model (tokenizers/punkt/english.pickle) and then runs the Treebank tokenizer on
each sentence. The split matters for object words: Treebank only detaches a period at the END of a
sentence, so "dogs. a cat" must become two sentences or "dogs." would never match "dog".

Punkt is an algorithm plus trained parameters. The algorithm is reimplemented below, rule for rule. Of the
parameters, lowercased text can only ever consult the small parts embedded here:

- the abbreviation types (156 entries) and the collocations (37 pairs), used whatever the case;
- the frequent sentence starters (39 entries), consulted only when the next word starts with an
  upper-case letter (after lower() only letters without a lower-case form, which no entry starts with);
- the orthographic context, which for a next word starting with a lower-case letter only decides
  "never seen sentence-initially in lower case, or seen capitalised" -- true for every type except the
  four listed in `_LOWER_CASE_STARTERS`; no type in the model starts with a character that lower()
  leaves upper-case, so such words have an empty context.

So for lowercased input this module decides every boundary as the full model does. (Text with capitals
is still split deterministically, but words the model saw capitalised are treated as unseen.)
"""
from __future__ import annotations

import re
from functools import lru_cache

# ---------------------------------------------------------------- trained parameters (english.pickle)
ABBREVIATIONS = frozenset("""
. . |a.a|a.c|a.d|a.g|a.h|a.m|a.m.e|a.s|a.t|adm|ala|ariz|aug|ave|b.f|b.v|bros|c|c.i.t|c.o.m.b|c.v|calif|chg|cie|co
|col|colo|conn|corp|cos|ct|d|d.c|d.h|d.w|dec|dr|e|e.f|e.h|e.l|e.m|f|f.g|f.j|feb|fla|fri|ft|g|g.d|g.f|g.k|ga|gen|h
|h.c|h.f|h.m|i.m.s|ill|inc|j.b|j.c|j.j|j.k|j.p|j.r|jan|jr|k|kan|ky|l|l.a|l.f|l.p|lt|ltd|m|m.b.a|m.d.c|m.j|maj
|messrs|mg|mich|minn|mr|mrs|ms|n|n.c|n.d|n.h|n.j|n.m|n.v|n.y|nev|nov|oct|ok|okla|ore|p|p.a.m|p.m|pa|ph.d|prof|r
|r.a|r.h|r.i|r.j|r.k|r.t|rep|reps|s|s.a|s.a.y|s.c|s.g|s.p.a|s.s|sen|sep|sept|sr|st|sw|t|t.j|tenn|tues|u.k|u.n
|u.s|u.s.a|u.s.s.r|v|va|vs|vt|w|w.c|w.r|w.va|w.w|wash|wed|wis|yr""".replace("\n", "").split("|"))

COLLOCATIONS = frozenset(
    [("##number##", w) for w in (
        "abreast aes business cbot colgate commodities cooper corrections credit dividend financing "
        "genentech henley insider international leisure letters notable pay-fone pegasus pepper review "
        "rj wedgestone who zimmer").split()]
    + [("b", w) for w in ("edelman", "levine", "smith", "stewart", "wigton")]
    + [("i", "magnin"), ("i", "toussie"), ("j", "aron"), ("j", "fialka"), ("j", "walter"), ("o", "ludcke")])

SENTENCE_STARTERS = frozenset(
    "according although among both but despite even he however i if in indeed instead it many meanwhile "
    "moreover most nevertheless nonetheless nor sales separately similarly since so some the there these "
    "they this though thus under when while yet".split())

# Types seen sentence-initially in lower case and never capitalised: the only lower-case words for which
# the orthographic heuristic answers "unknown" instead of "not a sentence starter".
_LOWER_CASE_STARTERS = frozenset({"administrators", "b-week", "r-revised", "z-holiday"})

# ---------------------------------------------------------------- Punkt's regular expressions
_NON_WORD = r"(?:[?!)\";}\]\*:@\'\({\[])"
_MULTI_CHAR = r"(?:\-{2,}|\.{2,}|(?:\.\s){2,}\.)"
_WORD_START = r"[^\(\"\`{\[:;&\#\*@\)}\]\-,]"

_PUNKT_WORD = re.compile(
    rf"({_MULTI_CHAR}"
    rf"|(?={_WORD_START})\S+?(?=\s|$|{_NON_WORD}|{_MULTI_CHAR}|,(?=$|\s|{_NON_WORD}|{_MULTI_CHAR}))"
    r"|\S)")
_PERIOD_CONTEXT = re.compile(rf"\S*[\.\?!](?=(?P<after_tok>{_NON_WORD}|\s+(?P<next_tok>\S+)))")
_BOUNDARY_REALIGNMENT = re.compile(r"[\"\')\]}]+?(?:\s+|(?=--)|$)", re.MULTILINE)
_ELLIPSIS = re.compile(r"\.\.+$")
_NUMERIC = re.compile(r"^-?[\.,]?\d[\d,\.-]*\.?$")
_INITIAL = re.compile(r"[^\W\d]\.$")
_SENT_END = (".", "?", "!")
_PUNCTUATION = tuple(";:,.!?")


class _Token:
    """One Punkt word with the annotations the two passes give it."""
    __slots__ = ("tok", "type", "period_final", "sentbreak", "abbr", "ellipsis")

    def __init__(self, tok: str):
        self.tok = tok
        self.type = _NUMERIC.sub("##number##", tok.lower())
        self.period_final = tok.endswith(".")
        self.sentbreak = self.abbr = self.ellipsis = False

    def type_no_period(self) -> str:
        t = self.type
        return t[:-1] if len(t) > 1 and t[-1] == "." else t

    def type_no_sentperiod(self) -> str:
        return self.type_no_period() if self.sentbreak else self.type


def _punkt_words(text: str) -> list[_Token]:
    # Punkt tokenizes line by line and skips blank lines (a ". . ." ellipsis never spans two lines).
    return [_Token(t) for line in text.split("\n") if line.strip() for t in _PUNKT_WORD.findall(line)]


def _first_pass(tok: _Token) -> None:
    """Decide from the word alone: end punctuation breaks, ellipses, abbreviations, other period-final words."""
    t = tok.tok
    if t in _SENT_END:
        tok.sentbreak = True
    elif _ELLIPSIS.match(t):
        tok.ellipsis = True
    elif tok.period_final and not t.endswith(".."):
        base = t[:-1].lower()
        if base in ABBREVIATIONS or base.split("-")[-1] in ABBREVIATIONS:
            tok.abbr = True
        else:
            tok.sentbreak = True


def _ortho_heuristic(tok: _Token):
    """Is `tok` the first word of a sentence? True, False or "unknown" (Punkt's three-valued answer)."""
    if tok.tok in _PUNCTUATION:
        return False
    first = tok.tok[0]
    if first.isupper():
        return "unknown"  # no trained type starts with such a character: its context is empty
    if first.islower() and tok.type_no_sentperiod() not in _LOWER_CASE_STARTERS:
        return False
    return "unknown"


def _second_pass(tok: _Token, nxt: _Token) -> None:
    """Revise the decision on a period-final word using the word that follows it."""
    if not tok.period_final:
        return
    typ = tok.type_no_period()
    next_typ = nxt.type_no_sentperiod()
    is_initial = bool(_INITIAL.match(tok.tok))
    if (typ, next_typ) in COLLOCATIONS:
        tok.sentbreak, tok.abbr = False, True
        return
    if (tok.abbr or tok.ellipsis) and not is_initial:
        if _ortho_heuristic(nxt) is True:
            tok.sentbreak = True
            return
        if nxt.tok[0].isupper() and next_typ in SENTENCE_STARTERS:
            tok.sentbreak = True
            return
    if is_initial or typ == "##number##":
        starter = _ortho_heuristic(nxt)
        if starter is False:
            tok.sentbreak, tok.abbr = False, True
            return
        # The "J. Bach" rule: an initial before an always-capitalised word. An upper-case first character
        # has an empty orthographic context here (see the module docstring), so the rule fires.
        if starter == "unknown" and is_initial and nxt.tok[0].isupper():
            tok.sentbreak, tok.abbr = False, True


@lru_cache(maxsize=1 << 14)
def _contains_sentbreak(context: str) -> bool:
    """Does the candidate context ("word. next") contain a break followed by another word?

    Cached: the same few thousand contexts ("dog. the", "table. a") recur across a corpus.
    """
    tokens = _punkt_words(context)
    for tok in tokens:
        _first_pass(tok)
    for i, tok in enumerate(tokens):
        if i + 1 < len(tokens):
            _second_pass(tok, tokens[i + 1])
        if tok.sentbreak:
            return i + 1 < len(tokens)
    return False


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text`, as nltk 3.2.5 `sent_tokenize` (English) cuts them."""
    end = len(text.rstrip())
    body = text[:end - 1]
    if "." not in body and "?" not in body and "!" not in body:
        # A candidate boundary needs a word after it, so with no [.?!] before the last character there is
        # none: one sentence without trailing whitespace (or none if empty).
        return [(0, end)] if end else []
    slices: list[tuple[int, int]] = []
    last = 0
    for m in _PERIOD_CONTEXT.finditer(text):
        if _contains_sentbreak(m.group() + m.group("after_tok")):
            slices.append((last, m.end()))
            last = m.start("next_tok") if m.group("next_tok") else m.end()
    slices.append((last, len(text.rstrip())))
    return _realign(text, slices)


def _realign(text: str, slices: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Move closing quotes/brackets that follow a boundary into the sentence before it ("(Sent1.) Sent2.")."""
    out = []
    shift = 0
    for i, (start, stop) in enumerate(slices):
        start += shift
        if i + 1 == len(slices):
            if start < stop:
                out.append((start, stop))
            continue
        nstart, nstop = slices[i + 1]
        m = _BOUNDARY_REALIGNMENT.match(text[nstart:nstop])
        if m:
            out.append((start, nstart + len(m.group(0).rstrip())))
            shift = m.end()
        else:
            shift = 0
            if start < stop:
                out.append((start, stop))
    return out
