"""Object vocabularies: built-ins, file layouts, and errors that name the file, the entry and the fix."""
import pytest

from reward.files import InputError
from reward.vocab import Vocabulary, load_vocabulary, vocabulary_from_mapping

pytestmark = pytest.mark.unit


def test_coco_is_the_reference_table():
    v = load_vocabulary("coco")
    assert len(v.objects) == 80
    assert v.objects[0] == "person" and v.objects[-1] == "toothbrush"
    assert " motor bike" in v.synonyms["motorcycle"]          # kept as the reference reads it
    assert "motor bike" in v.forms("motorcycle")              # clean forms for other users
    assert "iphone" in v.forms("cell phone")
    assert v.canonical("jetliner") == "airplane"
    assert v.canonical("dining table") == "dining table"
    assert v.canonical("unicorn") is None


def test_shapes_keeps_its_layout():
    v = load_vocabulary("shapes")
    assert v.name == "shapes"
    assert v.objects[:3] == ("circle", "square", "triangle")
    assert v.synonyms["moon"] == ("moon", "crescent", "crescent moon")


def test_yaml_json_and_plain_mappings(tmp_path):
    (tmp_path / "a.yaml").write_text("name: fruit\nobjects:\n  apple: [apple, green apple]\n  pear: pear\n")
    (tmp_path / "b.json").write_text('{"apple": ["granny smith"], "pear": []}')
    a = load_vocabulary(tmp_path / "a.yaml")
    assert a.name == "fruit" and a.objects == ("apple", "pear")
    assert a.synonyms["pear"] == ("pear",)
    b = load_vocabulary(str(tmp_path / "b.json"))
    assert b.name == "b"
    assert b.synonyms["apple"] == ("apple", "granny smith")   # the canonical name is a form of itself


def test_reference_txt_layout(tmp_path):
    f = tmp_path / "syn.txt"
    f.write_text("cup, mug,  beaker\nplate, dish\n")
    v = load_vocabulary(f)
    assert v.objects == ("cup", "plate")
    assert v.synonyms["cup"] == ("cup", "mug", " beaker")     # split on ", " exactly as the reference


def test_in_memory_vocabulary_is_hashable_and_equal():
    a = vocabulary_from_mapping("t", {"dog": ["puppy"]})
    b = vocabulary_from_mapping("t", {"dog": ["puppy"]})
    assert isinstance(a, Vocabulary) and a == b and hash(a) == hash(b)
    assert load_vocabulary(a) is a


@pytest.mark.parametrize("name, content, message", [
    ("missing.yaml", None, "not found"),
    ("v.toml", "x = 1", "format"),
    ("v.yaml", "objects: [a, b]\n", "expected a mapping"),
    ("v.yaml", "dog: [puppy]\ncat: [puppy]\n", "both"),
    ("v.json", '{"dog": [1, 2]}', "list of non-empty strings"),
    ("v.json", "{", "malformed JSON"),
    ("v.yaml", "dog: [\n", "malformed YAML"),
    ("v.yaml", "{}\n", "no objects"),
])
def test_bad_vocabulary_files(tmp_path, name, content, message):
    f = tmp_path / name
    if content is not None:
        f.write_text(content)
    with pytest.raises(InputError, match=message) as e:
        load_vocabulary(f)
    assert name in str(e.value)
