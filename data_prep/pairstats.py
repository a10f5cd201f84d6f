"""Statistics of a mined pair set (stats.json next to the pairs).

What a practitioner checks before training on pairs: how many of each kind, how many hallucinated
objects sit on each side, whether one side is systematically longer (DPO then learns "shorter wins",
the length bias), which objects the pairs teach about (the long tail), and what was skipped and why.
"""
from __future__ import annotations

from collections import Counter, defaultdict


ALL = "*"   # the words key of the whole pair set (no strategy has this name)

# Below this chosen/rejected ratio of mean word counts over the whole set, the mining command prints a note.
# On the demo's nine benched seeds (README, "How the demo was tuned") sets at 0.97-0.99 cost DPO 0-3 recall
# points; adding on-policy corrections (their chosen side 28-30 % shorter, the set at 0.89-0.91) cost 2-6.
SHORT_CHOSEN = 0.95


def length_bias_note(summary: dict, threshold: float = SHORT_CHOSEN) -> str | None:
    """One line when the chosen side of a pair set is systematically shorter than the rejected side, else
    None. DPO then learns "shorter wins" besides the grounding the pairs were mined for, and recall falls."""
    overall = summary.get("length")
    if not overall or overall["ratio_of_means"] >= threshold:
        return None
    short = ", ".join(f"{s} {v['length']['ratio_of_means']:.2f}" for s, v in summary["per_strategy"].items()
                      if v["length"]["ratio_of_means"] < threshold)
    return (f"the chosen responses are {100 * (1 - overall['ratio_of_means']):.0f} % shorter than the rejected "
            f"ones over all pairs (chosen/rejected words: {short}); DPO learns that shorter wins and recall "
            f"tends to fall. Balance it with omission edits (--edit-mix insert=1,swap=1,omit=2) or keep "
            f"length-matched pairs only (--length-match 0.2)")


def words(text: str) -> int:
    return len(text.split())


class MiningStats:
    def __init__(self):
        self.pairs: Counter = Counter()  # strategy -> pairs
        self.by_edit: Counter = Counter()  # (strategy, edit) -> pairs
        self.skipped: Counter = Counter()  # reason -> count (loader and miner)
        self.words = defaultdict(lambda: [0, 0, 0.0])  # key -> [chosen words, rejected words, sum of ratios]
        self.hallucinated = defaultdict(lambda: [0, 0])  # strategy -> [chosen side, rejected side]
        self.in_images: Counter = Counter()  # object -> pairs whose image holds it
        self.added: Counter = Counter()  # object -> pairs whose rejected side adds it (a hallucination taught)
        self.removed: Counter = Counter()  # object -> pairs whose rejected side lacks it
        self.images: set = set()
        self.n_images_seen = 0
        self.n_excluded = 0

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def add(self, rec: dict, present: set[str]) -> None:
        strategy, edit = rec["strategy"], rec["edit"]
        self.pairs[strategy] += 1
        self.by_edit[(strategy, edit)] += 1
        c, r = words(rec["chosen"][0]["content"][0]["text"]), words(rec["rejected"][0]["content"][0]["text"])
        for key in (strategy, f"{strategy}/{edit}", ALL):
            acc = self.words[key]
            acc[0] += c
            acc[1] += r
            acc[2] += c / max(r, 1)
        h = self.hallucinated[strategy]
        h[0] += len(rec["chosen_hallucinated"])
        h[1] += len(rec["rejected_hallucinated"])
        self.in_images.update(present)
        self.added.update(rec["objects_added"])
        self.removed.update(rec["objects_removed"])
        self.images.add(str(rec["image_id"]))

    def summary(self, vocab_objects=()) -> dict:
        def length(key: str, n: int) -> dict:
            c, r, ratios = self.words[key]
            return {"chosen_words": round(c / n, 3), "rejected_words": round(r / n, 3),
                    "ratio_of_means": round(c / max(r, 1), 4), "mean_ratio": round(ratios / n, 4)}

        per_strategy = {}
        for strategy, n in self.pairs.items():
            hc, hr = self.hallucinated[strategy]
            edits = {e: {"pairs": m, **length(f"{strategy}/{e}", m)}
                     for (s, e), m in sorted(self.by_edit.items()) if s == strategy}
            per_strategy[strategy] = {
                "pairs": n, "length": length(strategy, n),
                "hallucinated_objects": {"chosen": hc, "rejected": hr, "chosen_per_pair": round(hc / n, 4),
                                         "rejected_per_pair": round(hr / n, 4)},
                "edits": edits}
        total = sum(self.pairs.values())
        return {
            "pairs": total, "images_with_pairs": len(self.images), "images_considered": self.n_images_seen,
            "images_excluded": self.n_excluded, "length": length(ALL, total) if total else None,
            "per_strategy": per_strategy,
            "categories": self._categories(vocab_objects), "skipped": dict(sorted(self.skipped.items())),
        }

    def _categories(self, vocab_objects) -> dict:
        names = sorted(set(self.in_images) | set(self.added) | set(self.removed),
                       key=lambda o: (-self.in_images[o], o))
        histogram = {o: {"in_images": self.in_images[o], "added": self.added[o], "removed": self.removed[o]}
                     for o in names}
        # head = most frequent objects covering 80 % of occurrences; the rest is the long tail
        total, run, head = sum(self.in_images.values()), 0, []
        for o in names:
            if total and run >= 0.8 * total:
                break
            head.append(o)
            run += self.in_images[o]
        tail = {o: self.in_images[o] for o in names if o not in set(head)}
        never = sorted(set(vocab_objects) - set(names))
        return {"histogram": histogram, "head": head, "long_tail": tail, "never_seen": never}
