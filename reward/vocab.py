"""Object vocabularies: canonical object names and the surface forms that mention them.

Built in:
- "coco": the 80 COCO categories with CHAIR's synonym table, shipped verbatim as
  reward/vocabularies/coco.txt (LisaAnne/Hallucination data/synonyms.txt). The table's own quirks are
  kept in the data, because the reference scorer depends on them: " motor bike" and " cheesecake" carry a
  leading space (so they never match), "iPhone" has a capital (captions are lowercased, so it never
  matches), some lines repeat a form. Use `Vocabulary.forms(obj)` for clean, deduplicated forms.
- "shapes": the synthetic world's vocabulary, reward/vocabularies/shapes.yaml.

Any other vocabulary is a file:
- .yaml/.yml/.json: `{"name": ..., "objects": {canonical: [forms, ...]}}` (the shapes.yaml layout), or a
  plain mapping `{canonical: [forms, ...]}`; the canonical name is a form of itself even when not listed;
- .txt: the reference synonyms.txt layout, one object a line, "canonical, form, form" (", "-separated).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from reward.files import InputError

VOCABULARY_DIR = Path(__file__).resolve().parent / "vocabularies"
BUILT_IN = {"coco": VOCABULARY_DIR / "coco.txt", "shapes": VOCABULARY_DIR / "shapes.yaml"}

_FIX_LAYOUT = ("write {canonical: [surface forms]} (optionally under 'objects:' with a 'name:'), "
               "or a .txt with one 'canonical, form, form' line per object")


@dataclass(frozen=True)
class Vocabulary:
    """Canonical object names (file order) and, for each, its surface forms as listed (canonical first)."""
    name: str
    objects: tuple[str, ...]
    synonyms: Mapping[str, tuple[str, ...]] = field(hash=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "synonyms", MappingProxyType(dict(self.synonyms)))
        # Hashable (compiled matchers are cached per vocabulary); computed once, a lookup is then cheap.
        object.__setattr__(self, "_hash", hash((self.name, self.objects, tuple(self.synonyms.items()))))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return (isinstance(other, Vocabulary) and (self.name, self.objects) == (other.name, other.objects)
                and dict(self.synonyms) == dict(other.synonyms))

    def forms(self, obj: str) -> tuple[str, ...]:
        """Clean surface forms of `obj`: stripped, lowercased, deduplicated, in table order."""
        seen: dict[str, None] = {}
        for form in self.synonyms[obj]:
            seen.setdefault(" ".join(form.lower().split()), None)
        seen.pop("", None)
        return tuple(seen)

    def canonical(self, form: str) -> str | None:
        """The object a surface form (as listed) names; a form listed under several objects names the last."""
        return _inverse(self).get(form)


@lru_cache(maxsize=64)
def _inverse(vocab: Vocabulary) -> dict[str, str]:
    inverse = {}
    for obj in vocab.objects:
        for form in vocab.synonyms[obj]:
            inverse[form] = obj
    return inverse


def load_vocabulary(spec: str | os.PathLike | Vocabulary) -> Vocabulary:
    """"coco", "shapes", a Vocabulary (returned as is), or a path to a .json/.yaml/.yml/.txt vocabulary file."""
    if isinstance(spec, Vocabulary):
        return spec
    key = str(spec)
    if key in BUILT_IN:
        return _load_file(str(BUILT_IN[key]), key)
    path = Path(spec)
    if not path.is_file():
        raise InputError("vocabulary file not found", file=path,
                         fix=f"pass --vocab {' or '.join(BUILT_IN)} or the path of a .json/.yaml/.txt vocabulary")
    return _load_file(str(path.resolve()), None)


@lru_cache(maxsize=32)
def _load_file(path: str, name: str | None) -> Vocabulary:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".txt":
        return _from_reference_txt(p, name or p.stem)
    if suffix in (".yaml", ".yml", ".json"):
        return _from_mapping(p, _read_structured(p), name)
    raise InputError(f"unknown vocabulary format {suffix or '(no suffix)'!r}", file=p,
                     fix="use a .json, .yaml/.yml or .txt file")


def _from_reference_txt(path: Path, name: str) -> Vocabulary:
    # Exactly as CHAIR reads synonyms.txt: strip the line, split on ", " (so "a,  b" yields " b").
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path, fix="save the vocabulary as UTF-8") from None
    objects: list[str] = []
    synonyms: dict[str, tuple[str, ...]] = {}
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        forms = line.strip().split(", ")
        canonical = forms[0]
        if canonical in synonyms:
            raise InputError(f"object {canonical!r} has a second line", file=path, record=f"line {lineno}",
                             fix="merge its forms into one line")
        if "," in canonical:
            raise InputError(f"the canonical name {canonical!r} contains a comma", file=path,
                             record=f"line {lineno}", fix="separate forms with a comma and a space")
        objects.append(canonical)
        synonyms[canonical] = tuple(forms)
    if not objects:
        raise InputError("the vocabulary lists no objects", file=path, fix=_FIX_LAYOUT)
    return Vocabulary(name, tuple(objects), synonyms)


def _read_structured(path: Path) -> Any:
    if path.suffix.lower() == ".json":
        from reward.files import read_json
        return read_json(path, "vocabulary file")
    import yaml
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else None
        raise InputError(f"malformed YAML ({getattr(e, 'problem', None) or e})", file=path, record=where,
                         fix="repair the vocabulary file") from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path, fix="save the vocabulary as UTF-8") from None


def _from_mapping(path: Path, data: Any, name: str | None) -> Vocabulary:
    if isinstance(data, dict) and "objects" in data and not isinstance(data["objects"], dict):
        raise InputError(f"'objects' is a {type(data['objects']).__name__}, expected a mapping", file=path,
                         record="objects", fix=_FIX_LAYOUT)
    if isinstance(data, dict) and "objects" in data:
        name = name or str(data.get("name") or path.stem)
        table = data["objects"]
    elif isinstance(data, dict):
        name = name or path.stem
        table = data
    else:
        raise InputError(f"the vocabulary is a {type(data).__name__}, expected a mapping", file=path,
                         fix=_FIX_LAYOUT)
    if not table:
        raise InputError("the vocabulary lists no objects", file=path, fix=_FIX_LAYOUT)
    objects: list[str] = []
    synonyms: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for canonical, forms in table.items():
        record = f"object {canonical!r}"
        if not isinstance(canonical, str) or not canonical.strip():
            raise InputError("an object name is empty or not a string", file=path, record=record,
                             fix="name every object with a non-empty string")
        if isinstance(forms, str):
            forms = [forms]
        if forms is None:
            forms = []
        if not isinstance(forms, list) or not all(isinstance(f, str) and f.strip() for f in forms):
            raise InputError("its surface forms must be a list of non-empty strings", file=path, record=record,
                             fix=f"write {canonical}: [form, form, ...]")
        listed = tuple(dict.fromkeys([canonical] + [f for f in forms]))
        for form in listed:
            key = " ".join(form.lower().split())
            if key in owner and owner[key] != canonical:
                raise InputError(f"surface form {form!r} is listed under both {owner[key]!r} and {canonical!r}",
                                 file=path, record=record, fix="keep each surface form under one object")
            owner[key] = canonical
        objects.append(canonical)
        synonyms[canonical] = listed
    return Vocabulary(name, tuple(objects), synonyms)


def vocabulary_from_mapping(name: str, table: Mapping[str, list[str]]) -> Vocabulary:
    """Build a Vocabulary in memory from {canonical: [forms]} (same checks as a file)."""
    return _from_mapping(Path(f"<{name}>"), dict(table), name)

