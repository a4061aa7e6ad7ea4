"""Types of the compiled suffix trie (C sources in spec_sdk/proposers/csrc/suffix/).

`SuffixTree` mirrors `suffix_tree.SuffixTree` (same methods, same results); see that module
for what each operation means. Sequence ids are ints; an unknown one (or a closed one, where
it must be open) raises KeyError; a token outside [0, 2**31 - 1] raises ValueError or
OverflowError before anything changes.
"""

from collections.abc import Iterable
from typing import final

@final
class SuffixTree:
    """Compiled suffix_tree.SuffixTree: counts of every substring (up to max_depth tokens) of a
    set of token sequences."""

    def __init__(self, max_depth: int) -> None: ...
    @property
    def max_depth(self) -> int:
        """Longest context stored, in tokens."""
    @property
    def nodes(self) -> int:
        """Explicit nodes (the root included)."""
    @property
    def leaves(self) -> int:
        """Leaf edges."""
    @property
    def tokens(self) -> int:
        """Tokens of the stored sequences."""
    @property
    def entries(self) -> int:
        """Explicit nodes plus leaf edges: what the memory bound counts."""
    @property
    def memory_bytes(self) -> int:
        """Bytes allocated (O(nodes) to compute)."""
    def __len__(self) -> int: ...
    def __contains__(self, sid: object, /) -> bool: ...
    def add(self) -> int:
        """Start an empty open sequence; returns its id."""
    def close(self, sid: int, /) -> None:
        """No more tokens for `sid`; it stays counted until `remove` (unknown ids are ignored)."""
    def ends(self, sid: int, /) -> list[int]:
        """Explicit nodes of the contexts ending at `sid`'s last token (open sequences)."""
    def growth_bound(self, sid: int, n: int, /) -> int:
        """At most how many entries appending `n` tokens to `sid` adds."""
    def append(self, sid: int, tok: int, /) -> None: ...
    def extend(self, sid: int, tokens: Iterable[int], /) -> None: ...
    def remove(self, sid: int, /) -> None:
        """Forget sequence `sid` entirely (open or closed)."""
    def best_draft(
        self,
        sid: int,
        limit: int,
        factor: float,
        offset: float,
        min_prob: float,
        best_score: float,
        branching: int,
        /,
    ) -> tuple[float, list[int], list[int] | None] | None:
        """(score, tokens, parents) of the best draft that beats `best_score`, or None;
        parents is None for a chain (`branching` 0)."""
    def chain(self, node: int, limit: int, min_prob: float, /) -> tuple[list[int], float]:
        """(tokens, score) of the greedy continuation of `node`."""
    def tree(self, node: int, limit: int, min_prob: float, branching: int, /) -> tuple[list[int], list[int], float]:
        """(tokens, parents, score) of the best-first tree below `node`."""
    def sequences(self) -> dict[int, list[int]]:
        """{sid: tokens}, in ascending sid order."""
    def _check(self) -> None:
        """Verify the internal invariants (tests); raises AssertionError."""

def set_wide(width: int, /) -> int:
    """Set the WIDE threshold (suffix_tree.WIDE's counterpart) for every trie; returns the old one."""
