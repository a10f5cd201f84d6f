"""Caption edits on synthetic-world and COCO captions; expected texts written by hand."""
from __future__ import annotations

import random

import pytest

from data_prep.textedit import article_for, insert_object, pluralize, remove_object, swap_object
from reward.chair import extract_mentions
from reward.vocab import load_vocabulary

pytestmark = pytest.mark.unit

SHAPES = load_vocabulary("shapes")
COCO = load_vocabulary("coco")


def ex(vocab):
    return lambda text: extract_mentions(text, vocab, "fixed")


def singular(vocab):
    return frozenset(f.lower() for forms in vocab.synonyms.values() for f in forms)


@pytest.mark.parametrize("word, article", [("apple", "an"), ("umbrella", "an"), ("unicorn", "a"), ("hour", "an"),
                                           ("star", "a"), ("orange heart", "an"), ("one", "a")])
def test_article(word, article):
    assert article_for(word) == article


@pytest.mark.parametrize("noun, plural", [("star", "stars"), ("box", "boxes"), ("crescent moon", "crescent moons"),
                                          ("person", "people"), ("knife", "knives"), ("teddy bear", "teddy bears"),
                                          ("bus", "buses"), ("pony", "ponies")])
def test_pluralize(noun, plural):
    assert pluralize(noun) == plural


@pytest.mark.parametrize("vocab, text, obj, expected", [
    (SHAPES, "A red star and a blue crescent moon.", "star", "A blue crescent moon."),
    (SHAPES, "A red star and a blue crescent moon.", "moon", "A red star."),
    (SHAPES, "There is a green square next to a yellow triangle.", "square", "There is a yellow triangle."),
    (SHAPES, "There is a green square next to a yellow triangle.", "triangle", "There is a green square."),
    (SHAPES, "A red star, a blue moon and a green box.", "moon", "A red star and a green box."),
    (SHAPES, "A red star, a blue moon and a green box.", "square", "A red star and a blue moon."),
    (SHAPES, "A red star, a blue moon and a green box.", "star", "A blue moon and a green box."),
    (SHAPES, "There are a star and a ring.", "ring", "There is a star."),
    (SHAPES, "Two stars next to a ring. A heart is on the left.", "heart", "Two stars next to a ring."),
    (SHAPES, "A heart is on the left. Two stars next to a ring.", "heart", "Two stars next to a ring."),
    (COCO, "A man riding a horse next to a dog.", "horse", "A man next to a dog."),
    (COCO, "A man riding a horse next to a dog.", "dog", "A man riding a horse."),
    (COCO, "Two dogs sleeping on a couch.", "couch", "Two dogs."),
])
def test_remove(vocab, text, obj, expected):
    assert remove_object(text, obj, ex(vocab)) == expected


def test_remove_every_mention_and_refuse_to_empty():
    assert remove_object("A dog and a cat. The dog is brown.", "dog", ex(COCO)) == "A cat."
    assert remove_object("A red star.", "star", ex(SHAPES)) is None


@pytest.mark.parametrize("vocab, text, noun, expected", [
    (SHAPES, "A red star and a blue crescent moon.", "heart", "A red star, a blue crescent moon and a {c} heart."),
    (SHAPES, "There is a green square next to a yellow triangle.", "ring",
     "There is a green square next to a yellow triangle and a {c} ring."),
    (SHAPES, "A red star, a blue moon and a green box.", "arrow", "A red star, a blue moon, a green box and a {c} arrow."),
    (COCO, "A man riding a horse next to a dog.", "cat", "A man riding a horse next to a dog and a cat."),
    (COCO, "A man riding a horse next to a dog.", "umbrella", "A man riding a horse next to a dog and an umbrella."),
    (COCO, "A sunny day.", "dog", "A sunny day. There is also a dog."),
])
def test_insert(vocab, text, noun, expected):
    out = insert_object(text, extract_mentions(text, vocab, "fixed"), noun, random.Random(0))
    if "{c}" in expected:  # a colour is drawn for coloured captions; its article follows it
        colour = out.split(" ")[-2]
        art = "an" if colour[0] in "aeiou" else "a"
        expected = expected.replace("a {c}", f"{art} {colour}")
        assert colour in ("red", "blue", "green", "yellow", "purple", "orange", "white", "black")
    assert out == expected


@pytest.mark.parametrize("vocab, text, old, noun, expected", [
    (SHAPES, "A red star and a blue crescent moon.", "moon", "heart", "A red star and a blue heart."),
    (SHAPES, "Stars and a moon.", "star", "arrow", "Arrows and a moon."),
    (COCO, "A man riding a horse next to a dog.", "horse", "elephant", "A man riding an elephant next to a dog."),
    (COCO, "An apple and two dogs. The dog on the left is tired.", "dog", "cat",
     "An apple and two cats. The cat on the left is tired."),
    (COCO, "An apple on a table.", "apple", "banana", "A banana on a table."),
])
def test_swap(vocab, text, old, noun, expected):
    ms = extract_mentions(text, vocab, "fixed")
    assert swap_object(text, ms, old, noun, singular(vocab)) == expected
