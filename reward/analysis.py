"""Error analysis of hallucinations, from a CHAIR result's per-caption records (pure, no I/O).

What a reviewer asks after seeing a CHAIR number: which objects are hallucinated most, next to which
present objects (co-occurrence is the usual cause), where in the response (hallucinations cluster late
in long descriptions), and whether a hallucinated object stands in place of a present one the caption
leaves out (likely a misrecognition, which better perception fixes) or is added beside every present one
(often the language prior, which preference alignment targets).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Mapping, Sequence

POSITION_BINS = ("1st", "2nd", "3rd", "4th+")


def hallucination_analysis(per_caption: Sequence[Mapping], top: int = 10) -> dict:
    """Summarise CHAIR's per-caption records.

    Returns:
        most_hallucinated: [[object, count], ...] most frequent first (ties by name)
        co_occurring: {hallucinated object: [[present object, count], ...]} for the top objects
        by_position: {"1st": {"mentions", "hallucinated", "rate"}, ...} by the mention's ordinal in
            its caption (every mention counts, duplicates included, as CHAIR_i counts them)
        error_types: {"substitutions", "insertions", "deletions"}, counted per caption over distinct
            objects as word error rate counts words: with H hallucinated and M present-but-unnamed
            objects, min(H, M) are substitutions (named in place of a present object), the rest of H
            insertions and the rest of M deletions
    """
    counts: Counter = Counter()
    beside: dict[str, Counter] = defaultdict(Counter)
    bins = {b: [0, 0] for b in POSITION_BINS}
    types = Counter(substitutions=0, insertions=0, deletions=0)
    for rec in per_caption:
        truth = set(rec.get("ground_truth", []))
        named = {obj for _surface, obj in rec.get("mentioned", [])}
        extra, missing = len(named - truth), len(truth - named)
        # which extra object replaced which missing one is unknowable from the text; the counts are not
        types.update(substitutions=min(extra, missing), insertions=extra - min(extra, missing),
                     deletions=missing - min(extra, missing))
        for i, (_surface, obj) in enumerate(rec.get("mentioned", [])):
            b = POSITION_BINS[min(i, len(POSITION_BINS) - 1)]
            bins[b][0] += 1
            if obj not in truth:
                bins[b][1] += 1
                counts[obj] += 1
                beside[obj].update(truth)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return {
        "most_hallucinated": [[o, n] for o, n in ranked],
        "co_occurring": {o: [[p, n] for p, n in sorted(beside[o].items(), key=lambda kv: (-kv[1], kv[0]))[:5]]
                         for o, _ in ranked},
        "by_position": {b: {"mentions": m, "hallucinated": h, "rate": round(h / m, 4) if m else 0.0}
                        for b, (m, h) in bins.items()},
        "error_types": dict(types),
    }
