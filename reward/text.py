"""Word tokenization exactly as CHAIR's `nltk.word_tokenize` (nltk 3.2.5, Python 3), without nltk.

`word_tokenize(text)` = Punkt sentence split (reward/punkt.py), then the Treebank tokenizer on each
sentence, with the three rules nltk 3.2.5 inserts in front of Treebank's own (curly quotes, guillemets,
and a final-period rule that also looks through closing curly quotes). What the rules do, in order:

- quotes: a leading `"` becomes ``, `"` after a space/bracket becomes ``, every other `"` becomes '';
  curly quotes and guillemets are split off;
- punctuation: `,` and `:` are split off unless a digit follows (so "1,000" and "10:30" stay whole);
  "..." is split off; `; @ # $ % &` are split off; `?` and `!` are split off; a single quote before a
  space is split off; a period is split off ONLY at the end of the sentence ("dogs." mid-sentence stays
  one token -- that is why the sentence split matters);
- brackets are split off, "--" is split off;
- clitics: 's 'm 'd 'll 're 've n't (before a space) and the MacIntyre contractions (cannot -> can not,
  gonna -> gon na, gimme, gotta, lemme, wanna, d'ye, mor'n, 'tis, 'twas) are split.

`token_spans(text)` also returns where each token came from: tokens are pieces of the text in order (the
rules only insert spaces, and turn `"` into `` or ''), so each token starts at the next non-space
character. The per-rule "is the trigger character there?" guards skip substitutions that cannot change
anything; they never change the result.
"""
from __future__ import annotations

import re

from reward.punkt import sentence_spans

# (trigger characters, regex, replacement): the regex only runs when one of its trigger characters occurs.
_Rule = tuple

_STARTING_QUOTES: list[_Rule] = [
    ("«“‘", re.compile(r"([«“‘])"), r" \1 "),                # nltk 3.2.5 addition
    ('"', re.compile(r'^\"'), r"``"),
    ("`", re.compile(r"(``)"), r" \1 "),
    ('"', re.compile(r'([ (\[{<])"'), r"\1 `` "),
]
_PUNCTUATION: list[_Rule] = [
    (".", re.compile(r"([^\.])(\.)([\]\)}>\"\'»”’ ]*)\s*$"), r"\1 \2 \3 "),  # nltk 3.2.5 addition
    (":,", re.compile(r"([:,])([^\d])"), r" \1 \2"),
    (":,", re.compile(r"([:,])$"), r" \1 "),
    (".", re.compile(r"\.\.\."), r" ... "),
    (";@#$%&", re.compile(r"[;@#$%&]"), r" \g<0> "),
    (".", re.compile(r"([^\.])(\.)([\]\)}>\"\']*)\s*$"), r"\1 \2\3 "),  # the final period
    ("?!", re.compile(r"[?!]"), r" \g<0> "),
    ("'", re.compile(r"([^'])' "), r"\1 ' "),
]
_BRACKETS: list[_Rule] = [
    ("[](){}<>", re.compile(r"[\]\[\(\)\{\}\<\>]"), r" \g<0> "),
    ("-", re.compile(r"--"), r" -- "),
]
_ENDING_QUOTES: list[_Rule] = [
    ("»”’", re.compile(r"([»”’])"), r" \1 "),                # nltk 3.2.5 addition
    ('"', re.compile(r'"'), " '' "),
    ("'", re.compile(r"(\S)(\'\')"), r"\1 \2 "),
    ("'", re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    ("'", re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
]
# Case-insensitive (Unicode folding included), hence no cheap trigger character: one prefilter decides
# whether any of them can match ("can", "gim", "gon", "got", "lem", "wan", "d'", "mor'", "'t").
_CONTRACTIONS = [re.compile(p) for p in (
    r"(?i)\b(can)(not)\b", r"(?i)\b(d)('ye)\b", r"(?i)\b(gim)(me)\b", r"(?i)\b(gon)(na)\b",
    r"(?i)\b(got)(ta)\b", r"(?i)\b(lem)(me)\b", r"(?i)\b(mor)('n)\b", r"(?i)\b(wan)(na)\s",
    r"(?i) ('t)(is)\b", r"(?i) ('t)(was)\b")]
_CONTRACTION_HINT = re.compile(r"(?i)cannot|d'ye|gimme|gonna|gotta|lemme|mor'n|wanna|'tis|'twas")


def _apply(rules: list[_Rule], text: str, present: set[str]) -> str:
    for trigger, regex, repl in rules:
        if not present.isdisjoint(trigger):
            text = regex.sub(repl, text)
    return text


def treebank_tokenize(sentence: str) -> list[str]:
    """nltk 3.2.5's Treebank tokenizer with word_tokenize's additions, on one sentence."""
    # The rules only ever add spaces, and turn `"` into `` or '': the characters present at the start
    # (plus those) are the only triggers any rule can meet.
    present = set(sentence)
    if '"' in present:
        present.update("`'")
    text = _apply(_STARTING_QUOTES, sentence, present)
    text = _apply(_PUNCTUATION, text, present)
    text = _apply(_BRACKETS, text, present)
    text = _apply(_ENDING_QUOTES, " " + text + " ", present)
    if _CONTRACTION_HINT.search(text):
        for regex in _CONTRACTIONS:
            text = regex.sub(r" \1 \2 ", text)
    return text.split()


# ---------------------------------------------------------------- fast path for plain text
# A sentence of ASCII letters, digits and whitespace, with commas only before whitespace and at most one
# period, at its very end, meets only these rules: commas are split off, the final period is split off,
# and the letter-only contractions are split. Most captions consist of such sentences; the result is
# identical (tests/test_reward_text.py compares the two paths).
_PLAIN_SENTENCE = re.compile(r"(?:[a-z0-9 \t\n]|,(?=[ \t\n]))*\.?")
# The same characters over a whole text, with every period followed by whitespace or the end.
_PLAIN_TEXT = re.compile(r"(?:[a-z0-9 \t\n]|,(?=[ \t\n])|\.(?=[ \t\n]|$))*")
_PLAIN_TOKEN = re.compile(r"[a-z0-9]+|,|\.")
_LETTER_CONTRACTIONS = {"cannot": ("can", "not"), "gimme": ("gim", "me"), "gonna": ("gon", "na"),
                        "gotta": ("got", "ta"), "lemme": ("lem", "me"), "wanna": ("wan", "na")}
_LETTER_CONTRACTION_WORDS = frozenset(_LETTER_CONTRACTIONS)


def _split_letter_contractions(tokens: list[str]) -> list[str]:
    if _LETTER_CONTRACTION_WORDS.isdisjoint(tokens):
        return tokens
    out = []
    for tok in tokens:
        out.extend(_LETTER_CONTRACTIONS.get(tok, (tok,)))
    return out


def word_tokenize(text: str) -> list[str]:
    """`nltk.word_tokenize(text)` of nltk 3.2.5 (exact for lowercased text, which is what CHAIR passes)."""
    if _PLAIN_TEXT.fullmatch(text):
        # Plain characters, every period followed by a space. If every period also ends a sentence, each
        # sentence is plain and tokens do not depend on where sentences end: tokenize the text at once.
        periods = text.count(".")
        if periods == 0 or (periods == 1 and text.rstrip().endswith(".")):
            return _split_letter_contractions(_PLAIN_TOKEN.findall(text))
        spans = sentence_spans(text)
        if periods == sum(1 for _, end in spans if text[end - 1] == "."):
            return _split_letter_contractions(_PLAIN_TOKEN.findall(text))
    else:
        spans = sentence_spans(text)
    out: list[str] = []
    plain = _PLAIN_SENTENCE.fullmatch
    for start, end in spans:
        if plain(text, start, end):
            out.extend(_split_letter_contractions(_PLAIN_TOKEN.findall(text, start, end)))
        else:
            out.extend(treebank_tokenize(text[start:end]))
    return out


def token_spans(text: str) -> list[tuple[str, int, int]]:
    """`word_tokenize(text)` with each token's character span in `text`: (token, start, end).

    For a `"` that became `` or '' the span covers the one `"` character.
    """
    out: list[tuple[str, int, int]] = []
    pos = 0
    for tok in word_tokenize(text):
        while text[pos].isspace():  # str.split() separators are exactly str.isspace() characters
            pos += 1
        if text.startswith(tok, pos):
            end = pos + len(tok)
        elif text[pos] == '"' and tok in ("``", "''"):
            end = pos + 1
        else:  # pragma: no cover - the rules above only insert spaces and rewrite `"`
            raise AssertionError(f"token {tok!r} not found at {pos} in {text!r}")
        out.append((tok, pos, end))
        pos = end
    return out
