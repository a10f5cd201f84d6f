"""CHAIR: each rule and quirk of the reference (LisaAnne/Hallucination utils/chair.py), fixed mode,
other vocabularies, ground truth and the counting.

Reference expectations were derived from the reference's rules and checked with a throwaway run of the
reference code (Python 3, nltk 3.2.5, Pattern 3.6); they are written out, never computed by halign.
"""
import pytest

from reward.chair import Mention, chair_scores, extract_mentions, ground_truth_from_coco, ground_truth_from_records
from reward.files import InputError

pytestmark = pytest.mark.unit


def pairs(text, vocab="coco", mode="reference"):
    return [(m.surface, m.object) for m in extract_mentions(text, vocab, mode)]


# ---------------------------------------------------------------- reference rules, one per test
@pytest.mark.parametrize("text, expected", [
    ("A man holding two hot dogs.", [("man", "person"), ("hot dog", "hot dog")]),  # food, not a dog
    ("a hot dog dog", [("hot dog", "hot dog"), ("dog", "dog")]),
    ("teddy bears", [("teddy bear", "teddy bear")]),
    ("two traffic lights", [("traffic light", "traffic light")]),
    ("a street light", [("street light", "traffic light")]),
    ("an air plane", [("air plane", "airplane")]),
    ("suit cases", [("suit case", "suitcase")]),
    ("a laptop computer", [("laptop computer", "laptop")]),
    ("a cell phone", [("cell phone", "cell phone")]),
    ("a hair drier", [("hair drier", "hair drier")]),
    ("a potted plant", [("potted plant", "potted plant")]),
])
def test_double_words_merge(text, expected):
    assert pairs(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("a train track", []),      # merged into a non-object: no train
    ("home plate", []),
    ("a stove top oven", [("stove", "oven"), ("oven", "oven")]),  # three words never merge in pairs
])
def test_double_words_that_are_not_objects(text, expected):
    assert pairs(text) == expected


def test_double_words_merge_greedily_left_to_right():
    # "adult baby" is no pair, so "adult" stays a person and "baby bird" merges into the bird.
    assert pairs("adult baby bird") == [("adult", "person"), ("bird", "bird")]


def test_baby_and_adult_animals_are_the_animal():
    assert pairs("a baby elephant and an adult giraffe") == [("elephant", "elephant"), ("giraffe", "giraffe")]
    assert pairs("a baby") == [("baby", "person")]


def test_passenger_vehicles_are_the_vehicle():
    assert pairs("a passenger train and a passenger jet") == [("train", "train"), ("jet", "airplane")]
    assert pairs("a passenger") == [("passenger", "person")]


def test_bow_tie_is_a_tie():
    assert pairs("a bow tie") == [("tie", "tie")]
    assert pairs("bows") == [("bow", "tie")]


def test_toilet_seat_is_a_toilet_and_drops_every_seat():
    assert pairs("a toilet seat") == [("toilet", "toilet")]
    assert pairs("the seat of the toilet") == [("toilet", "toilet")]
    assert pairs("a toilet and two toilet seats and a seat") == [("toilet", "toilet"), ("toilet", "toilet")]
    assert pairs("a seat") == [("seat", "chair")]


@pytest.mark.parametrize("text, expected", [
    ("a bus", []), ("the bus's wheel", []),       # "bus" -> "bu"
    ("two buses", [("bus", "bus")]),              # "buses" -> "bus"
    ("a glass of wine", []),
    ("a wine glass", [("wine glass", "wine glass")]),  # "wine glas" entry
    ("Wine glasses", [("wine glass", "wine glass")]),
    ("a man in a suit and ties", [("man", "person")]),  # "ties" -> "ty"
    ("a tie", [("tie", "tie")]),
    ("a tennis racket", [("racket", "tennis racket")]),  # "tennis" -> "tenni": no merge, "racket" found
    ("a sports ball", [("ball", "sports ball")]),
    ("doggies", []), ("a doggie", [("doggie", "dog")]),
    ("a pair of scissor", []), ("scissors", [("scissors", "scissors")]),
])
def test_singularization_quirks(text, expected):
    assert pairs(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("a motor bike", []),                # " motor bike" has a leading space; the merged pair matches nothing
    ("a motorbike", [("motorbike", "motorcycle")]),
    ("a motor cycle", [("motor cycle", "motorcycle")]),
    ("a cheesecake", []),                # " cheesecake"
    ("an iPhone", []),                   # captions are lowercased, the entry is not
])
def test_synonym_table_quirks(text, expected):
    assert pairs(text) == expected


def test_irregular_plurals_and_synonyms():
    assert pairs("people and children") == [("person", "person"), ("child", "person")]
    assert pairs("a mouse and mice") == [("mouse", "mouse"), ("mouse", "mouse")]
    assert pairs("knives") == [("knife", "knife")]
    assert pairs("skis") == [("ski", "skis")]
    assert pairs("hairdryers") == [("hairdryer", "hair drier")]


def test_duplicates_are_kept_in_caption_order():
    assert pairs("a dog and a dog and two dogs") == [("dog", "dog")] * 3


def test_tokenization_decides_what_is_found():
    assert pairs("dogs.the cat") == [("cat", "cat")]     # "dogs.the" is one token
    assert pairs("A dog. A cat.") == [("dog", "dog"), ("cat", "cat")]
    assert pairs("Mr. Dog.") == [("dog", "dog")]
    assert pairs("a man’s dog") == [("man", "person"), ("dog", "dog")]
    assert pairs("three Giraffes, two Zebras and a Bear.") == [
        ("giraffe", "giraffe"), ("zebra", "zebra"), ("bear", "bear")]


def test_mentions_carry_spans_of_the_original_text():
    text = "Two Hot Dogs and a BABY bird near Stars."
    mentions = extract_mentions(text)
    assert [(m.surface, text[m.start:m.end]) for m in mentions] == [("hot dog", "Hot Dogs"), ("bird", "BABY bird")]
    assert all(isinstance(m, Mention) for m in mentions)


def test_spans_survive_lowercasing_that_changes_length():
    text = "İİ a dog"  # "İ".lower() is two characters
    (m,) = extract_mentions(text)
    assert text[m.start:m.end] == "dog"


# ---------------------------------------------------------------- fixed mode
@pytest.mark.parametrize("text, expected", [
    ("a bus", [("bus", "bus")]),
    ("two buses", [("bus", "bus")]),
    ("a motor bike", [("motor bike", "motorcycle")]),
    ("a cheesecake", [("cheesecake", "cake")]),
    ("an iPhone", [("iphone", "cell phone")]),
    ("a man in ties", [("man", "person"), ("tie", "tie")]),
    ("a tennis racket", [("tennis racket", "tennis racket")]),
    ("a sports ball", [("sports ball", "sports ball")]),
    ("a stove top oven", [("stove top oven", "oven")]),
    ("doggies", [("doggie", "dog")]),
    ("a wine glass and wine glasses", [("wine glass", "wine glass"), ("wine glass", "wine glass")]),
    ("a glass of water", []),
    ("people and children", [("people", "person"), ("children", "person")]),  # listed forms, as written
    ("a toilet seat next to a seat", [("toilet", "toilet")]),
    ("A man holding two hot dogs.", [("man", "person"), ("hot dog", "hot dog")]),
])
def test_fixed_mode_repairs_known_bugs(text, expected):
    assert pairs(text, mode="fixed") == expected


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError):
        extract_mentions("a dog", "coco", mode="best")


# ---------------------------------------------------------------- other vocabularies
def test_shapes_plurals_and_phrases():
    assert pairs("Two stars and a crescent moon.", "shapes") == [("star", "star"), ("crescent moon", "moon")]
    assert pairs("a star, a star and stars", "shapes") == [("star", "star")] * 3
    assert pairs("Boxes, discs and crescent moons; a doughnut.", "shapes") == [
        ("box", "square"), ("disc", "circle"), ("crescent moon", "moon"), ("doughnut", "ring")]
    assert pairs("a crescent", "shapes") == [("crescent", "moon")]


def test_shapes_spans():
    text = "Two Stars and crescent moons."
    assert [text[m.start:m.end] for m in extract_mentions(text, "shapes")] == ["Stars", "crescent moons"]


def test_custom_vocabulary_matches_singular_and_plural_forms(tmp_path):
    f = tmp_path / "v.json"
    f.write_text('{"glass": ["glass", "tumbler"], "bus": ["bus"], "wine bottle": ["wine bottle"]}')
    assert pairs("a glass and two glasses", str(f)) == [("glass", "glass"), ("glass", "glass")]
    assert pairs("a bus and buses", str(f)) == [("bus", "bus"), ("bus", "bus")]
    assert pairs("three wine bottles", str(f)) == [("wine bottle", "wine bottle")]


# ---------------------------------------------------------------- ground truth
INSTANCES = {
    "images": [{"id": 1}, {"id": 2}, {"id": 3}],
    "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}, {"id": 62, "name": "chair"},
                   {"id": 6, "name": "bus"}],
    "annotations": [
        {"id": 10, "image_id": 1, "category_id": 18, "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 1},   # crowd counts
        {"id": 12, "image_id": 2, "category_id": 6, "iscrowd": 0},
    ],
}
CAPTIONS = {"images": [{"id": 1}, {"id": 2}, {"id": 3}],
            "annotations": [{"image_id": 1, "caption": "A dog on a chair."},
                            {"image_id": 2, "caption": "a bus on the street"},      # "bus" -> "bu": nothing
                            {"image_id": 2, "caption": "two buses and a man"}]}


def test_ground_truth_is_instances_plus_caption_objects():
    truth = ground_truth_from_coco(INSTANCES, CAPTIONS)
    assert truth == {1: {"dog", "person", "chair"}, 2: {"bus", "person"}, 3: set()}


def test_ground_truth_without_captions():
    assert ground_truth_from_coco(INSTANCES) == {1: {"dog", "person"}, 2: {"bus"}, 3: set()}


def test_ground_truth_rejects_unknown_category():
    bad = {"categories": [{"id": 1, "name": "spaceship"}], "annotations": [], "images": []}
    with pytest.raises(InputError, match="spaceship"):
        ground_truth_from_coco(bad)


def test_ground_truth_from_jsonl_records():
    recs = [{"image_id": "a", "objects": [{"name": "star"}], "captions": ["two hearts"]},
            {"image_id": "b", "objects": []}]
    assert ground_truth_from_records(recs, "shapes") == {"a": {"star", "heart"}, "b": set()}


# ---------------------------------------------------------------- counting
def test_chair_counts_every_mention_and_every_caption():
    truth = {1: {"dog", "person"}, 2: {"cat"}}
    caps = [
        {"image_id": 1, "caption": "A dog and a dog on a couch."},   # dog, dog, couch(halluc.)
        {"image_id": 1, "caption": "A man."},                        # person
        {"image_id": 2, "response": "Nothing to see here."},         # no mention: still a caption
        {"image_id": 3, "caption": "A cat."},                        # image unknown: empty truth
    ]
    r = chair_scores(caps, truth)
    assert (r["n_captions"], r["n_mentions"], r["n_hallucinated"]) == (4, 5, 2)
    assert r["chair_s"] == 2 / 4
    assert r["chair_i"] == 2 / 5
    # recall pools images caption by caption: {dog} of 2, {person} of 2, {} of 1, {} of 0
    assert r["recall"] == 2 / 5
    first = r["per_caption"][0]
    assert first["mentioned"] == [["dog", "dog"], ["dog", "dog"], ["couch", "couch"]]
    assert first["hallucinated"] == [["couch", "couch"]]
    assert first["ground_truth"] == ["dog", "person"]
    assert [p["image_id"] for p in r["per_caption"]] == [1, 1, 2, 3]
    assert r["per_caption"][2]["caption"] == "Nothing to see here."


def test_chair_with_no_mentions_has_zero_rates():
    r = chair_scores([{"image_id": 1, "caption": "nothing"}], {1: {"dog"}})
    assert (r["chair_s"], r["chair_i"], r["recall"]) == (0.0, 0.0, 0.0)


def test_chair_matches_string_and_integer_image_ids():
    r = chair_scores([{"image_id": "1", "caption": "a dog"}], {1: {"dog"}})
    assert r["n_hallucinated"] == 0


def test_chair_on_shapes():
    r = chair_scores([{"image_id": 0, "caption": "Two stars and a crescent moon."}], {0: {"star"}}, "shapes")
    assert r["per_caption"][0]["mentioned"] == [["star", "star"], ["crescent moon", "moon"]]
    assert r["per_caption"][0]["hallucinated"] == [["crescent moon", "moon"]]
    assert (r["chair_s"], r["chair_i"], r["recall"]) == (1.0, 0.5, 1.0)


def test_caption_record_without_text_is_an_input_error():
    with pytest.raises(InputError, match="caption"):
        chair_scores([{"image_id": 1}], {})
