"""Object statistics over a set of grounded images: popularity and co-occurrence.

Both the pair miner (which absent object would a model most like to add?) and the POPE builder
(popular and adversarial negatives) rank objects with these counts. One pass, counts per image (an
image with three dogs counts once for "dog"), the way POPE's reference code counts.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from reward.files import InputError


class ObjectStats:
    """images[o]: images holding o; pair[a][b]: images holding both a and b (a != b)."""

    def __init__(self, object_sets: Iterable[Iterable[str]]):
        self.images: Counter = Counter()
        self.pair: dict[str, Counter] = {}
        self.n_images = 0
        for objs in object_sets:
            objs = set(objs)
            self.n_images += 1
            self.images.update(objs)
            for a in objs:
                row = self.pair.get(a)
                if row is None:
                    row = self.pair[a] = Counter()
                row.update(objs)
                row[a] -= 1
        for row in self.pair.values():  # drop the self-counts left at zero
            for k in [k for k, v in row.items() if v <= 0]:
                del row[k]
        self._cooc_cache: dict[tuple, list[tuple[str, float]]] = {}
        self._matrix = None

    def popular(self, universe: Iterable[str] = ()) -> list[str]:
        """Objects by number of images, most frequent first (ties by name); `universe` objects never
        seen are appended last so that every candidate has a rank."""
        ranked = sorted(self.images, key=lambda o: (-self.images[o], o))
        seen = set(ranked)
        return ranked + sorted(o for o in universe if o not in seen)

    def cooccurring(self, obj: str) -> list[str]:
        """Objects seen with `obj`, most often first (ties: the more popular, then by name)."""
        row = self.pair.get(obj, {})
        return sorted(row, key=lambda o: (-row[o], -self.images[o], o))

    def expected(self, present: Iterable[str], k: int = 3) -> list[tuple[str, float]]:
        """The `k` present objects that the other present ones predict most strongly, with their scores
        (sum over the others p of P(o | p), as `tempting` scores an absent object; scores of 0 left out, ties
        by name): the objects a model trained on this data names from habit, and may name where absent."""
        present = sorted(set(present))
        scored = [(o, sum(self.pair.get(p, {}).get(o, 0) / self.images[p] for p in present if p != o and self.images[p]))
                  for o in present]
        return [t for t in sorted(scored, key=lambda t: (-t[1], t[0]))[:k] if t[1] > 0]

    def tempting(self, present: frozenset[str], blocked: Iterable[str] = (), k: int = 3) -> list[tuple[str, float]]:
        """The `k` absent objects that the present ones predict most strongly, with their scores:
        sum over present p of P(o | p) = pair[p][o] / images[p]; objects in `blocked` and scores of 0 are
        left out, ties go to the name first in alphabetical order. These are the objects a model trained
        on this data is most tempted to add."""
        key = (present, frozenset(blocked), k)
        hit = self._cooc_cache.get(key)
        if hit is not None:
            return hit
        import numpy as np

        if self._matrix is None:
            self._build_matrix()
        rows = [self._index[p] for p in sorted(present) if p in self._index]  # sorted: same float sums
        if not rows:
            return []
        score = self._matrix[rows].sum(axis=0)
        drop = [self._index[o] for o in set(present) | set(blocked) if o in self._index]
        score[drop] = 0.0
        order = np.argsort(-score, kind="stable")[:k]
        ranked = [(self._names[i], float(score[i])) for i in order if score[i] > 0]
        if len(self._cooc_cache) < 100_000:
            self._cooc_cache[key] = ranked
        return ranked

    def _build_matrix(self) -> None:
        import numpy as np

        self._names = sorted(self.images)
        self._index = {o: i for i, o in enumerate(self._names)}
        m = np.zeros((len(self._names), len(self._names)))
        for p, row in self.pair.items():
            n = self.images[p]
            for o, c in row.items():
                m[self._index[p], self._index[o]] = c / n
        self._matrix = m


def pick_weighted(rng: random.Random, scored: Sequence[tuple[str, float]], top_k: int) -> str | None:
    """One of the `top_k` best candidates, drawn with probability proportional to its score."""
    head = [(o, s) for o, s in scored[:max(1, top_k)] if s > 0]
    if not head:
        return None
    if len(head) == 1:
        return head[0][0]
    total = sum(s for _, s in head)
    x = rng.random() * total
    for o, s in head:
        x -= s
        if x < 0:
            return o
    return head[-1][0]


def read_id_list(path: str | Path) -> set[str]:
    """Image ids from a file, compared as strings: one id a line, a JSON list (of ids or of objects with
    "image_id"), a JSONL of objects with "image_id" (CHAIR/POPE question files), or a POPE image list
    written by `halign data pope` ({"images": [{"image_id": ...}]})."""
    path = Path(path)
    if not path.is_file():
        raise InputError("exclude file not found", file=path, fix="check the --exclude path")
    text = path.read_text(encoding="utf-8")
    stripped = text.strip()
    if not stripped:
        return set()

    def ids_of(items, where, first=0) -> set[str]:
        out = set()
        for i, item in enumerate(items, first):
            if isinstance(item, dict):
                if "image_id" not in item:
                    raise InputError("item has no 'image_id'", file=path, record=f"{where} {i}",
                                     fix="list image ids, or objects with an 'image_id'")
                item = item["image_id"]
            if not isinstance(item, (int, str)) or isinstance(item, bool):
                raise InputError(f"image id {item!r} is not a number or a string", file=path,
                                 record=f"{where} {i}", fix="list image ids")
            out.add(str(item))
        return out

    if stripped[0] in "[{":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None  # maybe JSONL
        if isinstance(data, list):
            return ids_of(data, "item")
        if isinstance(data, dict):
            if isinstance(data.get("images"), list):
                return ids_of(data["images"], "images item")
            if "image_id" in data:
                return {str(data["image_id"])}
            raise InputError("JSON object without an 'images' list or 'image_id'", file=path,
                             fix="pass ids one a line, a JSON list, or a JSONL with 'image_id'")
        out: set[str] = set()
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise InputError(f"malformed JSON ({e.msg})", file=path, record=f"line {lineno}",
                                     fix="write one JSON object a line") from None
                out |= ids_of([rec], "line", lineno)
        return out
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
