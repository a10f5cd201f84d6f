"""The README's `halign ...` commands name real verbs and options (the docs cannot drift from the CLI)."""
import argparse
import dataclasses
import re
from pathlib import Path

import pytest

from align.cli import VERBS, build_parser
from align.pipeline import TRAINING_KINDS

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[tuple[tuple[str, ...], set[str]]]:
    """(verb path, options shown) for every `halign ...` span and command line in the README."""
    text = README.read_text()
    blocks = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S))
    lines = re.findall(r"`(halign [^`]*)`", text) + [ln.strip() for ln in blocks.splitlines()
                                                     if ln.startswith("halign ")]
    out = []
    for line in lines:
        words = line.replace("\\|", "|").split()[1:]
        verb_words = []
        for w in words:
            if w.startswith(("-", "[")) or w.isupper():
                break
            verb_words.append(w)
        flags = {m.group(1) for w in words for m in [re.match(r"\[?(--[A-Za-z][\w-]*)", w)] if m} - {"--field"}
        alternatives = verb_words[-1].split("|") if verb_words else []
        for alt in alternatives:
            out.append((tuple(verb_words[:-1] + [alt]), flags))
    return out


def options_of(verb: tuple[str, ...]) -> set[str]:
    if verb[0] in TRAINING_KINDS:          # training verbs parse their config dataclass's fields
        import importlib

        from align.dryrun import DRY_RUN_OPTIONS

        module, cls, _ = TRAINING_KINDS[verb[0]]
        fields = dataclasses.fields(getattr(importlib.import_module(module), cls))
        return ({f"--{f.name}" for f in fields} | {"--config", "--dry-run"}
                | set(DRY_RUN_OPTIONS))
    parser = build_parser(only=verb)
    for word in verb:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return {s for a in parser._actions for s in a.option_strings}


@pytest.mark.unit
def test_the_readme_shows_commands():
    verbs = {v for v, _ in readme_commands()}
    assert {("demo",), ("data", "pairs"), ("eval", "run"), ("dpo",), ("export",)} <= verbs


@pytest.mark.unit
@pytest.mark.parametrize("verb,flags", readme_commands(), ids=lambda x: " ".join(x) if isinstance(x, tuple) else "")
def test_readme_command_exists_with_its_options(verb, flags):
    assert verb in VERBS, f"README shows `halign {' '.join(verb)}`, which is not a verb"
    unknown = flags - options_of(verb)
    assert not unknown, f"README shows `halign {' '.join(verb)}` with options it does not take: {sorted(unknown)}"
