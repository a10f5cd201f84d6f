"""Pattern 3.6's English `singularize`, rule for rule and quirk for quirk, without Pattern.

CHAIR singularizes every token with `pattern.en.singularize`; its quirks decide which words CHAIR can
ever find, so they are kept on purpose:

- an "uninflected" or "uncountable" list entry that merely ENDS WITH the word keeps the word as it is
  ("on" stays because of "salmon", "ice" because of "advice", "s" because of "debris");
- the "-ie" list returns the word unchanged, s included ("doggies" stays "doggies"), and its entries
  "^pie"/"^tie" are literal strings that never match, so "ties" falls through to the y-rule: "ty";
- irregular plurals are found as suffixes ("women" -> "woman", "shelves" -> "shelve" via "helves",
  "your" -> "ymy" via "our");
- then the first matching suffix rule wins: "buses" -> "bus" but "bus" -> "bu", "glasses" -> "glass"
  but "glass" -> "glas", "tennis" -> "tenni", "sports" -> "sport";
- "x-in-y" compounds singularize the head; a trailing apostrophe becomes "'s" ("dogs'" -> "dog's").

`singularize` is memoised: a corpus has few distinct tokens, and the rules are a few dozen regexes.
"""
from __future__ import annotations

import re

_PLURAL_PREPOSITIONS = frozenset((
    "about above across after among around at athwart before behind below beneath beside besides between "
    "betwixt beyond but by during except for from in into near of off on onto out over since till to "
    "under until unto upon with").split())

_UNINFLECTED = (
    "bison", "debris", "headquarters", "pincers", "trout", "bream", "diabetes", "herpes", "pliers", "tuna",
    "breeches", "djinn", "high-jinks", "proceedings", "whiting", "britches", "eland", "homework", "rabies",
    "wildebeest", "carp", "elk", "innings", "salmon", "chassis", "flounder", "jackanapes", "scissors",
    "christmas", "gallows", "mackerel", "series", "clippers", "georgia", "measles", "shears", "cod",
    "graffiti", "mews", "species", "contretemps", "mumps", "swine", "corps", "news", "swiss")
_UNCOUNTABLE = (
    "advice", "equipment", "happiness", "luggage", "news", "software", "bread", "fruit", "information",
    "mathematics", "progress", "understanding", "butter", "furniture", "ketchup", "mayonnaise", "research",
    "water", "cheese", "garbage", "knowledge", "meat", "rice", "electricity", "gravel", "love", "mustard",
    "sand")
# Words in -ie whose plural is just +s. "^pie" and "^tie" look like anchors but are compared as text.
_IE_WORDS = (
    "alergie", "cutie", "hoagie", "newbie", "softie", "veggie", "auntie", "doggie", "hottie", "nightie",
    "sortie", "weenie", "beanie", "eyrie", "indie", "oldie", "stoolie", "yuppie", "birdie", "freebie",
    "junkie", "^pie", "sweetie", "zombie", "bogie", "goonie", "laddie", "pixie", "techie", "bombie",
    "groupie", "laramie", "quickie", "^tie", "collie", "hankie", "lingerie", "reverie", "toughie", "cookie",
    "hippie", "meanie", "rookie", "valkyrie")
_IE_PLURALS = tuple(w + "s" for w in _IE_WORDS)
# Irregular plural -> singular, tried in this order as suffixes of the lowercased word.
_IRREGULAR = {
    "atlantes": "atlas", "atlases": "atlas", "axes": "axe", "beeves": "beef", "brethren": "brother",
    "children": "child", "corpora": "corpus", "corpuses": "corpus", "ephemerides": "ephemeris",
    "feet": "foot", "ganglia": "ganglion", "geese": "goose", "genera": "genus", "genii": "genie",
    "graffiti": "graffito", "helves": "helve", "kine": "cow", "leaves": "leaf", "loaves": "loaf",
    "men": "man", "mongooses": "mongoose", "monies": "money", "moves": "move", "mythoi": "mythos",
    "numena": "numen", "occipita": "occiput", "octopodes": "octopus", "opera": "opus", "opuses": "opus",
    "our": "my", "oxen": "ox", "penes": "penis", "penises": "penis", "people": "person", "sexes": "sex",
    "soliloquies": "soliloquy", "teeth": "tooth", "testes": "testis", "trilbys": "trilby",
    "turves": "turf", "zoa": "zoon",
}
_IRREGULAR_RES = [(re.compile("(?i)" + plural + "$"), single) for plural, single in _IRREGULAR.items()]

# Suffix rules, first match wins. Some look odd on purpose ("[octop|vir]" is a character class).
_RULES = [(re.compile(pattern), repl) for pattern, repl in (
    (r"(?i)(.)ae$", "\\1a"),
    (r"(?i)(.)itis$", "\\1itis"),
    (r"(?i)(.)eaux$", "\\1eau"),
    (r"(?i)(quiz)zes$", "\\1"),
    (r"(?i)(matr)ices$", "\\1ix"),
    (r"(?i)(ap|vert|ind)ices$", "\\1ex"),
    (r"(?i)^(ox)en", "\\1"),
    (r"(?i)(alias|status)es$", "\\1"),
    (r"(?i)([octop|vir])i$", "\\1us"),
    (r"(?i)(cris|ax|test)es$", "\\1is"),
    (r"(?i)(shoe)s$", "\\1"),
    (r"(?i)(o)es$", "\\1"),
    (r"(?i)(bus)es$", "\\1"),
    (r"(?i)([m|l])ice$", "\\1ouse"),
    (r"(?i)(x|ch|ss|sh)es$", "\\1"),
    (r"(?i)(m)ovies$", "\\1ovie"),
    (r"(?i)(.)ombies$", "\\1ombie"),
    (r"(?i)(s)eries$", "\\1eries"),
    (r"(?i)([^aeiouy]|qu)ies$", "\\1y"),
    (r"([aeo]l)ves$", "\\1f"),
    (r"([^d]ea)ves$", "\\1f"),
    (r"arves$", "arf"),
    (r"erves$", "erve"),
    (r"([nlw]i)ves$", "\\1fe"),
    (r"(?i)([lr])ves$", "\\1f"),
    (r"([aeo])ves$", "\\1ve"),
    (r"(?i)(sive)s$", "\\1"),
    (r"(?i)(tive)s$", "\\1"),
    (r"(?i)(hive)s$", "\\1"),
    (r"(?i)([^f])ves$", "\\1fe"),
    (r"(?i)(^analy)ses$", "\\1sis"),
    (r"(?i)((a)naly|(b)a|(d)iagno|(p)arenthe|(p)rogno|(s)ynop|(t)he)ses$", "\\1\\2sis"),
    (r"(?i)(.)opses$", "\\1opsis"),
    (r"(?i)(.)yses$", "\\1ysis"),
    (r"(?i)(h|d|r|o|n|b|cl|p)oses$", "\\1ose"),
    (r"(?i)(fruct|gluc|galact|lact|ket|malt|rib|sacchar|cellul)ose$", "\\1ose"),
    (r"(?i)(.)oses$", "\\1osis"),
    (r"(?i)([ti])a$", "\\1um"),
    (r"(?i)(n)ews$", "\\1ews"),
    (r"(?i)s$", ""),
)]


def _singularize(word: str) -> str:
    if "-" in word:
        parts = word.split("-")
        if len(parts) > 1 and parts[1] in _PLURAL_PREPOSITIONS:  # mothers-in-law -> mother-in-law
            return singularize(parts[0]) + "-" + "-".join(parts[1:])
    if word.endswith("'"):
        return singularize(word[:-1]) + "'s"
    lower = word.lower()
    if any(entry.endswith(lower) for entry in _UNINFLECTED) or any(entry.endswith(lower) for entry in _UNCOUNTABLE):
        return word
    if lower.endswith(_IE_PLURALS):
        return lower
    for (plural, _), (regex, single) in zip(_IRREGULAR.items(), _IRREGULAR_RES):
        if lower.endswith(plural):
            return regex.sub(single, word)
    for regex, repl in _RULES:
        m = regex.search(word)
        if m:
            # Groups that did not take part are dropped from the replacement, as Pattern does.
            for k, group in enumerate(m.groups()):
                if group is None:
                    repl = repl.replace("\\" + str(k + 1), "")
            return regex.sub(repl, word)
    return word


_CACHE: dict[str, str] = {}
_CACHE_LIMIT = 1 << 17


def singularize(word: str) -> str:
    """`pattern.en.singularize(word)` of Pattern 3.6 (noun, no custom table)."""
    result = _CACHE.get(word)
    if result is None:
        result = _singularize(word)
        if len(_CACHE) >= _CACHE_LIMIT:  # bounded: a stream of unique tokens must not grow memory forever
            _CACHE.clear()
        _CACHE[word] = result
    return result
