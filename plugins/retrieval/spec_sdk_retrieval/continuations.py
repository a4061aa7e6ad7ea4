"""What to draft from a match's occurrences: the most frequent continuations, as REST does.

The occurrences' continuations form a trie; each trie node counts the occurrences passing
through it. The draft takes the `budget` nodes with the highest counts, best first (a
node's count never exceeds its parent's, so parents always come first and the nodes form a
tree). `chain=True` keeps only the best child of each node: the single most frequent path.
A node's count over the number of occurrences estimates the chance the model writes that
path, if the model writes what the corpus does.
"""

from __future__ import annotations

import heapq

import attrs
import numpy as np

from spec_sdk_retrieval.index import SEP


@attrs.frozen
class Continuations:
    tokens: list[int]
    parents: list[int]  # -1: a child of the root
    shares: list[float]  # count / occurrences, per node


def top_continuations(forward: np.ndarray, starts: np.ndarray, budget: int, chain: bool = False) -> Continuations:
    tokens: list[int] = []
    parents: list[int] = []
    shares: list[float] = []
    total = len(starts)
    # heap entries: (-count, depth, tie-break, token, parent node, its occurrences)
    heap: list[tuple[int, int, int, int, int, np.ndarray]] = []
    serial = 0

    def push_children(live: np.ndarray, depth: int, parent: int) -> None:
        nonlocal serial
        nxt = forward[live + depth]
        values, counts = np.unique(nxt, return_counts=True)
        keep = values != SEP  # occurrences whose document ends here continue with nothing
        values, counts = values[keep], counts[keep]
        for i in np.argsort(-counts, kind="stable")[: 1 if chain else budget]:
            serial += 1
            heapq.heappush(heap, (-int(counts[i]), depth, serial, int(values[i]), parent, live[nxt == values[i]]))

    if total:
        push_children(starts, 0, -1)
    while heap and len(tokens) < budget:
        neg, depth, _, token, parent, live = heapq.heappop(heap)
        tokens.append(token)
        parents.append(parent)
        shares.append(-neg / total)
        push_children(live, depth + 1, len(tokens) - 1)
    return Continuations(tokens, parents, shares)
