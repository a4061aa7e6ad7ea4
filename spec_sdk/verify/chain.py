"""Verification of drafts against the target: greedy and rejection sampling, chains and trees.

`verify` is `verify_batch` on a batch of one, so the two cannot disagree. A batch is verified
together: every sampled row of every request is warped in one `warp_probs` call, every greedy row is
argmaxed in one call, acceptance is decided with tensor ops, and the results reach the host in one
transfer (a single GPU sync per step). Greedy trees follow the argmax child (below); sampled trees
are in `spec_sdk.verify.tree`, which also explains why a tree with `probs` is sampled as its first
chain.

Rejection sampling (Leviathan et al. / Chen et al.): draft token x_i ~ q_i is accepted with
probability min(1, p_i(x_i) / q_i(x_i)); the first rejection emits a token from
normalize(max(p_i - q_i, 0)); if everything is accepted a bonus token is drawn from p_n. Each
emitted token then has exactly the target's distribution p. A deterministic draft (a one-hot q)
is matched against the target's own draw at each position instead, which has the same law
(accepted with probability p_i(x_i), else a token from the rest of p_i) and writes the target's
own text for the seed; the draws are spec_sdk.verify.keyed's.
"""

from __future__ import annotations

from typing import Callable, Sequence

import attrs
import torch
from torch import Tensor

from spec_sdk.types import Draft, SamplingParams, Verdict
from spec_sdk.verify.tree import first_chain_nodes, sampled_tree_values
from spec_sdk.verify.keyed import Source, chain_draws
from spec_sdk.verify.warp import sample_with_uniforms, to_device, warp_probs


@attrs.frozen
class _Phase:
    """The greedy or the sampled part of a batch: which requests, the device values it needs on the
    host (int64, 1-D), and how to turn those values into their verdicts once they are there."""

    ids: list[int]
    values: Tensor
    finish: Callable[[list[int]], list[Verdict]]


def acceptance_probs(p_rows: Tensor, q_rows: Tensor | None, tokens: Tensor) -> Tensor:
    """min(1, p_i(x_i) / q_i(x_i)) per row; `q_rows=None` is a deterministic (one-hot) draft.

    q_i(x_i) == 0 means the draft claims a token it could not have drawn; that is rejected.
    """
    index = tokens.to(device=p_rows.device, dtype=torch.int64).unsqueeze(1)
    p_x = p_rows.gather(1, index).squeeze(1)
    if q_rows is None:
        return p_x.clamp(max=1.0)
    q_x = q_rows.to(p_rows).gather(1, index).squeeze(1)
    has_mass = q_x > 0
    ratio = p_x / torch.where(has_mass, q_x, torch.ones_like(q_x))
    return torch.where(has_mass, ratio.clamp(max=1.0), torch.zeros_like(ratio))


def residual(p_row: Tensor, q_row: Tensor) -> Tensor:
    """normalize(max(p - q, 0)) over the last dim, falling back to p where it is all zero (p <= q
    everywhere, i.e. p == q: then no token is ever rejected, but the fallback keeps it well defined).
    """
    excess = (p_row - q_row.to(p_row)).clamp(min=0.0)
    mass = excess.sum(dim=-1, keepdim=True)
    positive = mass > 0
    return torch.where(positive, excess / torch.where(positive, mass, torch.ones_like(mass)), p_row)


def verify(logits: Tensor, draft: Draft | None, params: SamplingParams, generator: Source) -> Verdict:
    """Accept a prefix (chain) or path (tree) of `draft` and add one target token.

    `logits[0]` is the target's prediction after the request's last token, `logits[1 + i]` its
    prediction after draft node i.
    """
    return verify_batch([logits], [draft], [params], [generator])[0]


def verify_batch(
    logits: Sequence[Tensor],
    drafts: Sequence[Draft | None],
    params: Sequence[SamplingParams],
    generators: Sequence[Source],
) -> list[Verdict]:
    """`verify` for every request of a step; request j draws only from `generators[j]`."""
    if not len(logits) == len(drafts) == len(params) == len(generators):
        raise ValueError("verify_batch needs one logits, draft, params and generator per request")
    checked = [_checked(x, d) for x, d in zip(logits, drafts)]
    greedy = [j for j, p in enumerate(params) if p.greedy]
    # Sampled requests: chains (and trees with probs, reduced to their first chain, see tree.py)
    # go to the chain sampler; deterministic trees to the sibling-rejection tree sampler.
    as_tree = [j for j, p in enumerate(params) if not p.greedy and _is_plain_tree(checked[j])]
    as_chain = [j for j, p in enumerate(params) if not p.greedy and not _is_plain_tree(checked[j])]

    phases: list[_Phase] = []
    if greedy:
        phases.append(_greedy_phase(greedy, [logits[j] for j in greedy], [checked[j] for j in greedy]))
    if as_chain or as_tree:
        phases.extend(_sampled_phases(as_chain, as_tree, logits, checked, params, generators))
    if not phases:
        return []

    device = phases[0].values.device
    host = torch.cat([phase.values.to(device) for phase in phases]).tolist()  # the step's only sync
    verdicts: dict[int, Verdict] = {}
    offset = 0
    for phase in phases:
        size = phase.values.numel()
        verdicts.update(zip(phase.ids, phase.finish(host[offset : offset + size])))
        offset += size
    return [verdicts[j] for j in range(len(logits))]


def _checked(logits: Tensor, draft: Draft | None) -> Draft | None:
    """Shape checks that catch a misaligned batch here rather than as a silently wrong token."""
    n = 0 if draft is None else len(draft)
    if logits.dim() != 2 or logits.shape[0] != 1 + n:
        raise ValueError(f"logits must be [1 + {n}, V] for a draft of {n} nodes, got {tuple(logits.shape)}")
    if draft is None or n == 0:
        return None
    v = logits.shape[1]
    if min(draft.tokens) < 0 or max(draft.tokens) >= v:
        raise ValueError(f"draft tokens must lie in [0, {v})")
    if draft.probs is not None and draft.probs.shape[1] != v:
        raise ValueError(f"draft probs have vocabulary {draft.probs.shape[1]}, the target has {v}")
    return draft


def _row_starts(lengths: list[int]) -> list[int]:
    """First row of each request in the concatenated logits (a request has 1 + n rows)."""
    starts, row = [], 0
    for n in lengths:
        starts.append(row)
        row += 1 + n
    return starts


def _leading_true(flags: Tensor, lengths: list[int]) -> Tensor:
    """Per segment of `flags` (segments of `lengths`, concatenated): how many leading entries are True."""
    device = flags.device
    grid = torch.zeros(len(lengths), max(lengths, default=0), dtype=torch.int64, device=device)
    if flags.numel():
        rows = to_device([j for j, n in enumerate(lengths) for _ in range(n)], torch.int64, device)
        cols = to_device([i for n in lengths for i in range(n)], torch.int64, device)
        grid[rows, cols] = flags.to(torch.int64)  # padding stays 0 and reads as a rejection
    return grid.cumprod(dim=1).sum(dim=1)


def _flat_tokens(drafts: Sequence[Draft | None], device: torch.device) -> Tensor:
    return to_device([t for d in drafts if d is not None for t in d.tokens], torch.int64, device)


def _undrafted(tokens: list[int]) -> list[Verdict]:
    """The verdicts of a phase without drafts: each request emits its one token."""
    return [Verdict(path=(), tokens=(t,)) for t in tokens]


def _greedy_phase(ids: list[int], logits: list[Tensor], drafts: list[Draft | None]) -> _Phase:
    device = logits[0].device
    lengths = [0 if d is None else len(d) for d in drafts]
    starts = _row_starts(lengths)
    best = (logits[0] if len(logits) == 1 else torch.cat(logits)).argmax(dim=-1)  # first among ties, as generate()
    total_rows = best.numel()
    if total_rows == len(drafts):
        # no drafts (target-only decoding, a step where no request speculates): the argmax is
        # all there is, and the tensor work of matching nothing cost as much again on a CPU
        return _Phase(ids=ids, values=best, finish=_undrafted)

    chains = [j for j, d in enumerate(drafts) if d is None or d.is_chain]
    chain_lengths = [lengths[j] for j in chains]
    # Node i of a chain must equal the argmax of the row before it (the root's row for node 0).
    before = to_device([starts[j] + i for j in chains for i in range(lengths[j])], torch.int64, device)
    matches = _flat_tokens([drafts[j] for j in chains], device) == best[before]
    counts = _leading_true(matches, chain_lengths)

    def finish(host: list[int]) -> list[Verdict]:
        best_h, counts_h = host[:total_rows], host[total_rows:]
        accepted = dict(zip(chains, counts_h))
        verdicts = []
        for j, draft in enumerate(drafts):
            rows = best_h[starts[j] : starts[j] + 1 + lengths[j]]
            if draft is None:
                verdicts.append(Verdict(path=(), tokens=(rows[0],)))
            elif j in accepted:
                a = accepted[j]
                verdicts.append(Verdict(path=range(a), tokens=draft.tokens[:a] + (rows[a],)))
            else:
                path, extra = _greedy_tree_path(draft, rows)
                verdicts.append(Verdict(path=path, tokens=[draft.tokens[i] for i in path] + [extra]))
        return verdicts

    return _Phase(ids=ids, values=torch.cat([best, counts]), finish=finish)


def _greedy_tree_path(draft: Draft, best: list[int]) -> tuple[list[int], int]:
    """From the root, step to the child whose token is the target's argmax at the current node
    (the first such child if a proposer sent duplicate siblings); stop when no child matches, and
    emit that argmax."""
    assert draft.parents is not None
    children: dict[int, list[int]] = {}
    for node, parent in enumerate(draft.parents):
        children.setdefault(parent, []).append(node)
    path: list[int] = []
    node = -1
    while True:
        want = best[node + 1]  # row 0 is the root's prediction, row 1 + i node i's
        node = next((c for c in children.get(node, ()) if draft.tokens[c] == want), -2)
        if node == -2:
            return path, want
        path.append(node)


def _draft_q(draft: Draft, vocab: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    if draft.probs is not None:
        return draft.probs.to(device=device, dtype=dtype, non_blocking=True)
    tokens = to_device(draft.tokens, torch.int64, device).unsqueeze(1)
    return torch.zeros(len(draft), vocab, dtype=dtype, device=device).scatter_(1, tokens, 1.0)


def _is_plain_tree(draft: Draft | None) -> bool:
    """A deterministic non-chain draft: the one kind the tree sampler takes."""
    return draft is not None and not draft.is_chain and draft.probs is None


def _sampled_phases(
    as_chain: list[int],
    as_tree: list[int],
    logits: Sequence[Tensor],
    drafts: Sequence[Draft | None],
    params: Sequence[SamplingParams],
    generators: Sequence[Source],
) -> list[_Phase]:
    """The chain and tree sampling phases, their rows warped together in one `warp_probs` call."""
    device = logits[0].device
    chain_logits: list[Tensor] = []
    chain_drafts: list[Draft | None] = []
    chain_nodes: dict[int, list[int]] = {}  # request -> tree node of each first-chain position
    for j in as_chain:
        draft = drafts[j]
        if draft is None or draft.is_chain:
            chain_logits.append(logits[j])
            chain_drafts.append(draft)
            continue
        nodes = first_chain_nodes(draft)  # a tree with probs: see tree.py for why
        assert draft.probs is not None
        chain_nodes[j] = nodes
        rows = to_device([0, *(1 + i for i in nodes)], torch.int64, device)
        chain_logits.append(logits[j].index_select(0, rows))
        chain_drafts.append(Draft(tokens=[draft.tokens[i] for i in nodes], probs=draft.probs[nodes]))
    tree_logits = [logits[j] for j in as_tree]
    row_params = [params[j] for j, x in zip(as_chain + as_tree, chain_logits + tree_logits) for _ in range(x.shape[0])]
    p_all = warp_probs(torch.cat(chain_logits + tree_logits), row_params)  # every sampled row, one call
    chain_rows = sum(x.shape[0] for x in chain_logits)

    phases = []
    if as_chain:
        phase = _sampled_phase(as_chain, p_all[:chain_rows], chain_drafts, [generators[j] for j in as_chain])
        if chain_nodes:
            phase = _Phase(ids=phase.ids, values=phase.values, finish=_to_tree_paths(phase, chain_nodes))
        phases.append(phase)
    if as_tree:
        values, finish = sampled_tree_values(
            p_all[chain_rows:], [drafts[j] for j in as_tree], [generators[j] for j in as_tree]  # type: ignore[misc]
        )
        phases.append(_Phase(ids=as_tree, values=values, finish=finish))
    return phases


def _to_tree_paths(phase: _Phase, chain_nodes: dict[int, list[int]]) -> Callable[[list[int]], list[Verdict]]:
    """Wrap a chain phase's finish so first-chain positions become the tree's node indices."""

    def finish(host: list[int]) -> list[Verdict]:
        verdicts = phase.finish(host)
        return [
            attrs.evolve(v, path=[chain_nodes[j][i] for i in v.path]) if j in chain_nodes else v
            for j, v in zip(phase.ids, verdicts)
        ]

    return finish


def _sampled_phase(
    ids: list[int], p_all: Tensor, drafts: list[Draft | None], generators: list[Source]
) -> _Phase:
    """Chain rejection sampling; `p_all` holds the requests' warped rows, 1 + n_j each."""
    device = p_all.device
    vocab = p_all.shape[1]
    lengths = [0 if d is None else len(d) for d in drafts]
    starts = _row_starts(lengths)

    # per request: n acceptance tests, n residual draws and the target's own draws it can use
    # (spec_sdk.verify.keyed). The target's own token: at every row of a deterministic draft
    # (what it is matched against), and at the last row of any request (what the step emits
    # after the last draft token; without a draft, exactly `sample(p)`). Other rows are left at -1.
    sampled = [d is not None and d.probs is not None for d in drafts]
    draws = [chain_draws(g, () if d is None else d.tokens, smp) for g, d, smp in zip(generators, drafts, sampled)]
    if not any(lengths):
        # no drafts: each request's own draw from its one row, and nothing to test (the general
        # path below gives the same verdicts with a dozen more small tensor ops)
        own_draw = sample_with_uniforms(p_all, torch.cat([o for _, _, o in draws]))
        return _Phase(ids=ids, values=own_draw, finish=_undrafted)
    u_accept = torch.cat([a for a, _, _ in draws]).to(device, non_blocking=True)
    u_residual = torch.cat([r for _, r, _ in draws]).to(device, non_blocking=True)
    own_rows = [s + i for s, n, smp in zip(starts, lengths, sampled) for i in range(n + 1) if not smp or i == n]
    own_u = torch.cat([o for _, _, o in draws])
    own = torch.full((p_all.shape[0],), -1, dtype=torch.int64, device=device)
    own_index = to_device(own_rows, torch.int64, device)
    own[own_index] = sample_with_uniforms(p_all[own_index], own_u)

    starts_t = to_device(starts, torch.int64, device)
    with_draft = [d for d in drafts if d is not None]
    if not with_draft:
        counts = torch.zeros(len(lengths), dtype=torch.int64, device=device)
        extra = own[starts_t]
        soft = torch.zeros(0, dtype=torch.int64, device=device)
    else:
        draft_rows = to_device([s + i for s, n in zip(starts, lengths) for i in range(n)], torch.int64, device)
        q = torch.cat([_draft_q(d, vocab, p_all.dtype, device) for d in with_draft])
        p_draft = p_all[draft_rows]
        tokens = _flat_tokens(drafts, device)
        token_chances = acceptance_probs(p_draft, q, tokens)
        # a sampled draft token is tested against min(1, p/q); a deterministic one is accepted
        # if it is the target's own token there (probability p(x), as the test would give)
        sampled_rows = to_device([s for s, n in zip(sampled, lengths) for _ in range(n)], torch.bool, device)
        accepted = torch.where(sampled_rows, u_accept < token_chances, own[draft_rows] == tokens)
        counts = _leading_true(accepted, lengths)
        # what acceptance was to be expected at each position (Verdict), sent with the counts
        chances = torch.minimum(p_draft, q).sum(dim=1).clamp(max=1.0)
        soft = torch.cat([_fixed_point(token_chances), _fixed_point(chances)])
        # A sampled draft rejected at position c emits from the residual there; anything else
        # emits the target's own token where it stopped (a deterministic draft's first miss, or
        # after the last draft token).
        rejected = counts < to_device(lengths, torch.int64, device)
        # Request j's draft rows start at starts[j] - j in q; clamped for requests that need none.
        q_index = (starts_t - torch.arange(len(lengths), device=device) + counts).clamp(max=q.shape[0] - 1)
        from_residual = sample_with_uniforms(residual(p_all[starts_t + counts], q[q_index]), u_residual[q_index])
        extra = torch.where(rejected & to_device(sampled, torch.bool, device), from_residual, own[starts_t + counts])

    rows = sum(lengths)

    def finish(host: list[int]) -> list[Verdict]:
        b = len(drafts)
        count_h, extra_h = host[:b], host[b : 2 * b]
        token_h = [v / _FIXED_ONE for v in host[2 * b : 2 * b + rows]]
        chance_h = [v / _FIXED_ONE for v in host[2 * b + rows :]]
        return [
            Verdict(path=range(a), tokens=(() if d is None else d.tokens[:a]) + (x,),
                    token_chances=token_h[s - j : s - j + n], chances=chance_h[s - j : s - j + n])
            for j, (d, a, x, s, n) in enumerate(zip(drafts, count_h, extra_h, starts, lengths))
        ]

    return _Phase(ids=ids, values=torch.cat([counts, extra, soft]), finish=finish)


# probabilities travel to the host with the step's integers, in one transfer, as fixed point
_FIXED_ONE = 1 << 30


def _fixed_point(probs: Tensor) -> Tensor:
    return (probs.to(torch.float64) * _FIXED_ONE).round().to(torch.int64)
