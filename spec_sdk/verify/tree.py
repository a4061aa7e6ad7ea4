"""Rejection sampling over draft trees.

Deterministic trees (`probs is None`, a one-hot q per node): recursive rejection over siblings.
At a node whose warped target distribution is p, its children are tried in index order; child
token x is accepted with probability p'(x), where p' is p with the mass of every earlier
sibling's token taken out and renormalised (the current residual). On acceptance verification
moves into that child and continues with the child's own target row; when every child is
rejected one token is drawn from the final residual (p with all children's tokens removed), or
from p itself at a node without children.

Why this is lossless: at one node, with distinct sibling tokens x_1..x_m, the emitted token y
has P(y = x_j) = prod_{i<j}(1 - a_i) * a_j with a_j = p(x_j) / (1 - p(x_1) - ... - p(x_{j-1})),
which telescopes to p(x_j); and when all are rejected (probability 1 - sum_j p(x_j)) y is drawn
from p restricted to the other tokens, so P(y) = p(y) for those too. Hence the first emitted
token has exactly the distribution p, and after accepting x_j the procedure restarts from the
child, whose row is the target's distribution after the context extended by x_j: by induction
every emitted sequence follows the target. A duplicate sibling token has already lost its mass
(p'(x) = 0), so it is never accepted: it is skipped, and the proof above holds over the distinct
tokens. tests/test_verify_tree.py checks all of this by exact enumeration.

The children's tests are independent uniforms, and a child's test only matters if its earlier
siblings were all rejected, so "the first child whose own test passes" is exactly the sequential
procedure. That lets every test of every tree in the batch be decided at once on the device; the
host then walks each tree along the flags it got back in the step's single transfer.

Trees with a draft distribution (`probs` given, non-one-hot q) are NOT sampled as trees.
General multi-draft recursive rejection (SpecTr / SpecInfer style) is lossless only if the
siblings are i.i.d. draws from one shared q, which tree proposers (top-k expansions, suffix
branches, beam-like heads) do not guarantee, and nothing in `Draft` can express it. Under sampling
such a tree is verified by its first chain (each node's first child, from the root): every node of
that chain was drawn from its own `probs` row given its ancestors, which is exactly what chain
rejection sampling needs, so the chain verifier's proof applies unchanged and the other branches
are ignored. The verdict's path is given in the tree's node indices.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from spec_sdk.types import Draft, Verdict
from spec_sdk.verify.keyed import TREE, Source, tree_draws
from spec_sdk.verify.warp import sample_with_uniforms, to_device


def first_chain_nodes(draft: Draft) -> list[int]:
    """Node indices of the chain that follows each node's first child from the root."""
    if draft.parents is None:
        return list(range(len(draft)))
    keep: list[int] = []
    want = -1
    for node, parent in enumerate(draft.parents):
        if parent == want:  # parents precede children, so the first child is met first
            keep.append(node)
            want = node
    return keep


def sibling_acceptance(p_parents: Tensor, tokens: Tensor, removed: Tensor) -> Tensor:
    """Probability of accepting each node's token: p'(x) where p' is its parent's row `p_parents`
    [G, V] with the `removed` [G, V] tokens (its earlier siblings') taken out and renormalised.

    A token that is itself removed (a duplicate sibling) gets 0; so does a row with no mass left.
    """
    remaining = p_parents.masked_fill(removed, 0.0)
    mass = remaining.sum(dim=-1)
    p_x = remaining.gather(1, tokens.to(device=remaining.device, dtype=torch.int64).unsqueeze(1)).squeeze(1)
    has_mass = mass > 0
    ratio = p_x / torch.where(has_mass, mass, torch.ones_like(mass))
    return torch.where(has_mass, ratio.clamp(max=1.0), torch.zeros_like(ratio))


def sibling_residual(p_rows: Tensor, removed: Tensor) -> Tensor:
    """normalize(p with the `removed` tokens' mass taken out), row-wise.

    Where nothing is left (all of p's mass sat on rejected tokens, an event of probability 0 that
    only rounding can reach) it falls back to p, so a draw is always well defined.
    """
    remaining = p_rows.masked_fill(removed, 0.0)
    mass = remaining.sum(dim=-1, keepdim=True)
    has_mass = mass > 0
    return torch.where(has_mass, remaining / torch.where(has_mass, mass, torch.ones_like(mass)), p_rows)


def children_of(draft: Draft) -> dict[int, list[int]]:
    """Parent (-1 = root) -> its children in index order (the order they are tried)."""
    assert draft.parents is not None
    children: dict[int, list[int]] = {}
    for node, parent in enumerate(draft.parents):
        children.setdefault(parent, []).append(node)
    return children


def walk(draft: Draft, accepted: Sequence[bool | int]) -> list[int]:
    """The path from the root: at each node, step into the first child whose test passed."""
    children = children_of(draft)
    path: list[int] = []
    node = -1
    while True:
        node = next((c for c in children.get(node, ()) if accepted[c]), -2)
        if node == -2:
            return path
        path.append(node)


def sampled_tree_values(
    p_rows: Tensor, drafts: Sequence[Draft], generators: Sequence[Source]
) -> tuple[Tensor, Callable[[list[int]], list[Verdict]]]:
    """Decide every sibling test of every deterministic tree in one go.

    `p_rows` holds the warped target rows of these requests, concatenated: request j has 1 + n_j
    rows (root, then node i at 1 + i). Returns the int64 values to bring to the host (one
    acceptance flag per node, then one candidate token per row: what would be emitted if the
    path ended there) and the function that turns them into verdicts.
    """
    device = p_rows.device
    vocab = p_rows.shape[1]
    lengths = [len(d) for d in drafts]
    starts: list[int] = []
    parent_rows: list[int] = []
    tokens: list[int] = []
    removed_at: tuple[list[int], list[int]] = ([], [])  # (node, token): an earlier sibling's token
    emptied_at: tuple[list[int], list[int]] = ([], [])  # (row, token): a child's token of that row
    # per request: each node's test as (offset of its position, TREE + rank among its
    # siblings), and each row's offset where the step would emit if the path ended there
    tests: list[list[tuple[int, int]]] = []
    emits: list[list[int]] = []
    row = 0
    for j, draft in enumerate(drafts):
        assert draft.parents is not None and draft.probs is None
        starts.append(row)
        siblings: dict[int, list[int]] = {}
        depth = [0] * len(draft)  # a parent comes before its children
        tests.append([])
        for node, (parent, token) in enumerate(zip(draft.parents, draft.tokens)):
            g = len(tokens)
            earlier = siblings.setdefault(parent, [])
            depth[node] = 1 + (depth[parent] if parent >= 0 else 0)
            tests[-1].append((depth[node] - 1, TREE + len(earlier)))
            removed_at[0].extend([g] * len(earlier))
            removed_at[1].extend(earlier)
            earlier.append(token)
            parent_rows.append(row + 1 + parent)
            tokens.append(token)
        for parent, kids in siblings.items():
            emptied_at[0].extend([row + 1 + parent] * len(kids))
            emptied_at[1].extend(kids)
        emits.append([0, *depth])
        row += 1 + len(draft)

    # drawn whatever is accepted, as the chain sampler does (spec_sdk.verify.keyed)
    draws = [tree_draws(g, t, e) for g, t, e in zip(generators, tests, emits)]
    u_accept = torch.cat([a for a, _ in draws]).to(device, non_blocking=True)
    u_rows = torch.cat([e for _, e in draws]).to(device, non_blocking=True)  # one per row

    removed = torch.zeros(len(tokens), vocab, dtype=torch.bool, device=device)
    if removed_at[0]:
        removed[to_device(removed_at[0], torch.int64, device), to_device(removed_at[1], torch.int64, device)] = True
    p_parents = p_rows[to_device(parent_rows, torch.int64, device)]
    accepted = u_accept < sibling_acceptance(p_parents, to_device(tokens, torch.int64, device), removed)

    # Every row's candidate emission from its own residual, with the request's one extra uniform:
    # the path's end is decided by the acceptance uniforms alone, so the candidate that is used
    # is an honest draw from that end's residual.
    emptied = torch.zeros(row, vocab, dtype=torch.bool, device=device)
    emptied[to_device(emptied_at[0], torch.int64, device), to_device(emptied_at[1], torch.int64, device)] = True
    extra = sample_with_uniforms(sibling_residual(p_rows, emptied), u_rows)

    def finish(host: list[int]) -> list[Verdict]:
        flags, candidates = host[: len(tokens)], host[len(tokens) :]
        verdicts = []
        g = 0
        for draft, start, n in zip(drafts, starts, lengths):
            path = walk(draft, flags[g : g + n])
            end_row = start + 1 + (path[-1] if path else -1)
            verdicts.append(Verdict(path=path, tokens=[draft.tokens[i] for i in path] + [candidates[end_row]]))
            g += n
        return verdicts

    return torch.cat([accepted.to(torch.int64), extra]), finish
