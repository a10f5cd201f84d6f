"""Tokenizer and sentence splitter: each rule of nltk 3.2.5's word_tokenize / English Punkt model.

Expected values come from a throwaway run of the real nltk 3.2.5 (english.pickle) on lowercased text;
they are written out here, never produced by the code under test.
"""
import pytest

from reward.punkt import sentence_spans
from reward.text import token_spans, word_tokenize

pytestmark = pytest.mark.unit


def sentences(text):
    return [text[a:b] for a, b in sentence_spans(text)]


# ---------------------------------------------------------------- Punkt sentence split
@pytest.mark.parametrize("text, expected", [
    ("a dog. a cat.", ["a dog.", "a cat."]),                       # period + next word: a break
    ("two dogs . the cat", ["two dogs .", "the cat"]),            # a lone period is a break too
    ("dogs.the cat", ["dogs.the cat"]),                            # no space after the period: no candidate
    ("a man with a dog etc. a cat", ["a man with a dog etc.", "a cat"]),  # "etc" is not in the model
    ("mr. smith has a dog.", ["mr. smith has a dog."]),           # known abbreviation, lower-case next word
    ("the u.s. army has dogs.", ["the u.s. army has dogs."]),
    ("it is 5 p.m. the dog", ["it is 5 p.m. the dog"]),
    ("1. a dog 2. a cat.", ["1. a dog 2. a cat."]),               # number + lower-case word: ordinal
    ("i saw a. b. c. dogs", ["i saw a. b. c. dogs"]),             # initials + lower-case word
    ("no. 5 is a dog", ["no.", "5 is a dog"]),                    # "no" is not an abbreviation
    ("e.g. a dog", ["e.g.", "a dog"]),                            # neither is "e.g"
    ("a dog! a cat? a bird.", ["a dog!", "a cat?", "a bird."]),   # ! and ? break
    ("a dog.\n\nthe cat.", ["a dog.", "the cat."]),
    ("(a dog.) the cat.", ["(a dog.)", "the cat."]),              # closing bracket realigned
    ('"a dog." the cat', ['"a dog."', "the cat"]),                 # closing quote realigned
    ("a dog.  ", ["a dog."]),                                     # trailing space dropped
    ("  a dog", ["  a dog"]),                                     # leading space kept
    ("", []), ("  ", []), (".", ["."]),
    ("x. administrators here", ["x.", "administrators here"]),    # initial + word seen lower-case initially
    ("a z-holiday. administrators. a dog", ["a z-holiday.", "administrators.", "a dog"]),
])
def test_sentence_split(text, expected):
    assert sentences(text) == expected


# ---------------------------------------------------------------- Treebank rules
@pytest.mark.parametrize("text, expected", [
    # the final period is split off, a period inside a sentence is not
    ("a dog. a cat.", ["a", "dog", ".", "a", "cat", "."]),
    ("a dog.the cat. a bird", ["a", "dog.the", "cat", ".", "a", "bird"]),
    ("mr. smith has a dog.", ["mr.", "smith", "has", "a", "dog", "."]),
    ("a man with a dog etc. a cat", ["a", "man", "with", "a", "dog", "etc", ".", "a", "cat"]),
    ("1. a dog 2. a cat.", ["1.", "a", "dog", "2.", "a", "cat", "."]),
    ("dogs…", ["dogs…"]),
    # clitics
    ("it's a dog's toy", ["it", "'s", "a", "dog", "'s", "toy"]),
    ("the dogs' bowl", ["the", "dogs", "'", "bowl"]),
    ("a dog'", ["a", "dog", "'"]),
    ("i can't see, he won't go", ["i", "ca", "n't", "see", ",", "he", "wo", "n't", "go"]),
    ("i'm here, we'll go, they're there, you've got",
     ["i", "'m", "here", ",", "we", "'ll", "go", ",", "they", "'re", "there", ",", "you", "'ve", "got"]),
    ("o'clock", ["o'clock"]),
    # MacIntyre contractions
    ("you cannot go", ["you", "can", "not", "go"]),
    ("gonna wanna gotta gimme lemme", ["gon", "na", "wan", "na", "got", "ta", "gim", "me", "lem", "me"]),
    ("'tis a dog", ["'t", "is", "a", "dog"]),
    # quotes
    ('"a dog" on a bench', ["``", "a", "dog", "''", "on", "a", "bench"]),
    ('he said "hi" to me', ["he", "said", "``", "hi", "''", "to", "me"]),
    ("“a dog” and ‘a cat’ «x»", ["“", "a", "dog", "”", "and", "‘", "a", "cat", "’", "«", "x", "»"]),
    # brackets, dashes, ellipsis, ? !
    ("a dog (brown) and [a cat] {x} <y>",
     ["a", "dog", "(", "brown", ")", "and", "[", "a", "cat", "]", "{", "x", "}", "<", "y", ">"]),
    ("a dog -- a cat", ["a", "dog", "--", "a", "cat"]),
    ("wait... a dog", ["wait", "...", "a", "dog"]),
    ("a dog ...the cat", ["a", "dog", "...", "the", "cat"]),
    ("is it a dog? yes! a cat", ["is", "it", "a", "dog", "?", "yes", "!", "a", "cat"]),
    # other punctuation; commas and colons before digits stay
    ("price: $3.88 & 10% #tag @user; ok",
     ["price", ":", "$", "3.88", "&", "10", "%", "#", "tag", "@", "user", ";", "ok"]),
    ("1,000 dogs, 10:30 am, a,b", ["1,000", "dogs", ",", "10:30", "am", ",", "a", ",", "b"]),
    ("a dog,", ["a", "dog", ","]),
    ("a dog , , a cat", ["a", "dog", ",", ",", "a", "cat"]),
    ("a dog,,cat", ["a", "dog", ",", ",cat"]),          # the comma rule does not overlap its matches
    ("", []),
    # plain multi-sentence text: only periods that end a sentence are split off
    ("a dog. 2. cats. mr. dog.", ["a", "dog", ".", "2.", "cats", ".", "mr.", "dog", "."]),
    ("two dogs. a cat\n. a man", ["two", "dogs", ".", "a", "cat", ".", "a", "man"]),
    ("a cannot. gonna wanna.", ["a", "can", "not", ".", "gon", "na", "wan", "na", "."]),
    ("dogs , cats. a b. c", ["dogs", ",", "cats", ".", "a", "b.", "c"]),
])
def test_word_tokenize(text, expected):
    assert word_tokenize(text) == expected


@pytest.mark.parametrize("text", [
    "a dog. a cat.", '"a dog" on a bench', "i can't see, he won't go", "you cannot go",
    "(a dog.) the cat.", "  two  dogs\tand\n a cat , ok", "1,000 dogs, 10:30 am, a,b",
])
def test_token_spans_point_at_the_text(text):
    spans = token_spans(text)
    assert [t for t, _, _ in spans] == word_tokenize(text)
    for tok, start, end in spans:
        written = text[start:end]
        assert written == tok or (written == '"' and tok in ("``", "''"))
    assert [s for _, s, _ in spans] == sorted(s for _, s, _ in spans)


def test_plain_fast_path_agrees_with_the_rules():
    # The fast path (letters, digits, commas before spaces, one final period) must give what the full
    # rule chain gives; compare on sentences that take it.
    from reward.text import treebank_tokenize
    for text in ["a man riding a bus , two dogs.", "a cannot b gonna c wanna", "gotta lemme gimme 2 dogs.",
                 "a dog,\tcat", "x", ".", "3 dogs ."]:
        assert word_tokenize(text) == treebank_tokenize(text), text
