"""Pattern 3.6 `singularize`, one test per rule group and per quirk.

Expected values were read off Pattern 3.6's rules and checked with a throwaway run of its inflect.py.
"""
import pytest

from reward.singular import singularize

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("word, expected", [
    # quirks CHAIR depends on
    ("bus", "bu"), ("buses", "bus"), ("glass", "glas"), ("glasses", "glass"), ("ties", "ty"), ("tie", "tie"),
    ("tennis", "tenni"), ("sports", "sport"), ("class", "clas"), ("was", "wa"), ("this", "thi"),
    ("cactus", "cactu"), ("canvas", "canva"),
])
def test_reference_quirks(word, expected):
    assert singularize(word) == expected


@pytest.mark.parametrize("word, expected", [
    # an uninflected / uncountable entry that ENDS WITH the word keeps the word
    ("scissors", "scissors"), ("series", "series"), ("species", "species"), ("sheep", "sheep"),
    ("luggage", "luggage"), ("news", "news"), ("diabetes", "diabetes"),
    ("on", "on"),        # "salmon" ends with "on"
    ("ice", "ice"),      # "advice" ends with "ice"
    ("s", "s"),          # "debris" ends with "s"
    ("is", "is"),        # "debris" ends with "is"
])
def test_uninflected_and_uncountable_suffixes(word, expected):
    assert singularize(word) == expected


@pytest.mark.parametrize("word, expected", [
    ("doggies", "doggies"), ("cookies", "cookies"), ("zombies", "zombies"),  # -ie list: returned unchanged
    ("pies", "py"),                                                          # "^pie" never matches
])
def test_ie_words(word, expected):
    assert singularize(word) == expected


@pytest.mark.parametrize("word, expected", [
    ("people", "person"), ("women", "woman"), ("men", "man"), ("children", "child"), ("teeth", "tooth"),
    ("feet", "foot"), ("geese", "goose"), ("oxen", "ox"), ("axes", "axe"), ("kine", "cow"), ("genii", "genie"),
    ("leaves", "leaf"),
    ("shelves", "shelve"),  # suffix "helves"
    ("your", "ymy"), ("four", "fmy"), ("hour", "hmy"),  # suffix "our"
])
def test_irregular_suffixes(word, expected):
    assert singularize(word) == expected


@pytest.mark.parametrize("word, expected", [
    ("quizzes", "quiz"), ("matrices", "matrix"), ("indices", "index"), ("statuses", "status"),
    ("octopi", "octopus"), ("cacti", "cactus"), ("virii", "virius"), ("taxi", "taxi"),
    ("crises", "crisis"), ("shoes", "shoe"), ("tomatoes", "tomato"), ("mice", "mouse"),
    ("dishes", "dish"), ("watches", "watch"), ("boxes", "box"), ("benches", "bench"), ("movies", "movie"),
    ("stories", "story"), ("fries", "fry"), ("wolves", "wolf"), ("halves", "half"), ("dwarves", "dwarf"),
    ("knives", "knife"), ("hives", "hive"), ("archives", "archive"), ("analyses", "analysis"),
    ("theses", "thesis"), ("diagnoses", "diagnosis"), ("roses", "rose"), ("doses", "dose"),
    ("bonuses", "bonuse"), ("glucose", "glucose"), ("data", "datum"), ("criteria", "criterium"),
    ("giraffes", "giraffe"), ("horses", "horse"), ("pizzas", "pizza"), ("stars", "star"), ("pants", "pant"),
    ("fish", "fish"), ("ski", "ski"), ("skis", "ski"),
])
def test_suffix_rules_in_order(word, expected):
    assert singularize(word) == expected


@pytest.mark.parametrize("word, expected", [
    ("mothers-in-law", "mother-in-law"),   # head of a preposition compound
    ("hot-dogs", "hot-dog"),               # other compounds: the last rule on the whole word
    ("dogs'", "dog's"),                    # trailing apostrophe -> 's
    ("'", "'s"),
    ("bus's", "bus'"),
])
def test_compounds_and_apostrophes(word, expected):
    assert singularize(word) == expected


def test_memoised_result_is_stable():
    assert singularize("buses") == singularize("buses") == "bus"
