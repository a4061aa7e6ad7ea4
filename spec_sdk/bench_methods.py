"""The bench's lineup: a `Method` per way to decode -- each proposer we can build, again at
every swept draft length, the suffix proposer's trees, the cascades and the adaptive policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from spec_sdk.policy import CascadePolicy, Policy

# Option names through which a proposer factory may ask for the draft model.
DRAFT_OPTIONS = ("model", "draft", "draft_model")
# Option name through which a speculator factory takes where to find its checkpoint; the bench
# passes the target's directory, and the factory picks its sibling (the zoo's mlp/ or lstm/).
SPECULATOR_OPTION = "speculator"



@attrs.frozen
class Method:
    """A named way to decode: proposers (name -> options), the draft length `k`, and the
    policy that combines them (None: the engine's default, the first proposer at `k`)."""

    name: str
    proposers: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    k: int = 0
    policy: Policy | None = None
    # a policy that learns must start fresh in each engine (the warm-up's and the measured one's)
    policy_factory: Callable[[], Policy] | None = None



def sdk_methods(
    names: Sequence[str], k: int, draft: Any, given: Mapping[str, Mapping[str, Any]] | None = None,
    speculator: Any = None,
) -> tuple[list[Method], dict[str, str]]:
    """A `Method` per proposer we can build, and why each other one was skipped.

    A factory may need arguments: `given[name]` supplies some (a workload's corpus for the
    retrieval proposer), one named like a draft model gets `draft`, one named `speculator` gets
    `speculator` (the target's directory: a speculator proposer loads its sibling checkpoint);
    anything else required means the bench cannot run it, so it is skipped rather than guessed at.
    """
    import inspect

    from spec_sdk.proposers import registry

    methods: list[Method] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            params = inspect.signature(registry.lookup(name)).parameters.values()
        except Exception as exc:  # a broken plugin must not stop the bench
            skipped[name] = f"cannot load: {exc}"
            continue
        options: dict[str, Any] = dict((given or {}).get(name, {}))
        missing = []
        for p in params:
            if p.name == SPECULATOR_OPTION and speculator is not None and p.name not in options:
                options[p.name] = speculator  # optional in the factory, but the bench knows the target
                continue
            if p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in options:
                continue
            if p.name in DRAFT_OPTIONS and draft is not None:
                options[p.name] = draft
            else:
                missing.append(p.name)
        if missing:
            skipped[name] = f"needs {', '.join(missing)}, which the bench cannot supply"
            continue
        try:
            registry.create(name, **options)  # fail here, not in the middle of a run
        except Exception as exc:
            skipped[name] = f"cannot build: {exc}"
            continue
        methods.append(Method(f"{name} k={k}", {name: options}, k))
    return methods, skipped


def sweep_methods(methods: Sequence[Method], ks: Sequence[int]) -> list[Method]:
    """Every single-proposer method again at each draft length in `ks` (its own k excluded)."""
    out = []
    for m in methods:
        if len(m.proposers) != 1 or m.policy is not None:
            continue
        (name,) = m.proposers
        out += [attrs.evolve(m, name=f"{name} k={k}", k=k) for k in ks if k != m.k]
    return out


def suffix_trees(methods: Sequence[Method], ks: Sequence[int]) -> list[Method]:
    """The suffix proposer drafting trees (several branches, verified at once) at each length in
    `ks`, besides its chains: production systems verify suffix drafts as chains only."""
    out = []
    for m in methods:
        if len(m.proposers) == 1 and m.policy is None and "suffix" in m.proposers:
            opts = {**m.proposers["suffix"], "tree": True}
            out += [Method(f"suffix tree k={k}", {"suffix": opts}, k) for k in dict.fromkeys(ks)]
            break
    return out


def adaptive_method(methods: Sequence[Method], max_k: int = 8) -> Method | None:
    """The adaptive policy over every single proposer of `methods`, with their options."""
    from spec_sdk.adaptive import AdaptivePolicy

    proposers: dict[str, Mapping[str, Any]] = {}
    for m in methods:
        if len(m.proposers) == 1 and m.policy is None:
            proposers.update(m.proposers)
    if not proposers:
        return None
    names = list(proposers)
    return Method("adaptive", proposers, max_k, policy_factory=lambda: AdaptivePolicy(proposers=names, max_k=max_k))


def cascades(methods: Sequence[Method], k: int, cheap: str = "suffix", sweep: Sequence[int] = ()) -> list[Method]:
    """Arctic Inference's combination: the cheap proposer's draft when it scores at least
    `k`, else the other proposer's -- one cascade per other proposer; and each with the rate
    bar (the cheap draft when its step is expected to emit tokens as fast as the other's
    steps do, all measured), at `k` and at every draft length of `sweep`, as the singles are;
    and one with the rate bar whose stages have their own lengths: the cheap proposer at the
    longest, the other at the shortest (a suffix draft is cheap to make long and pays when it
    scores high; a model's draft costs a call per token and pays best short on a CPU)."""
    first = next((m for m in methods if cheap in m.proposers), None)
    if first is None:
        return []
    out = []
    for m in methods:
        if cheap in m.proposers:
            continue
        (other,) = m.proposers
        both = {**first.proposers, **m.proposers}
        out.append(Method(f"cascade {cheap}>{other} k={k}", both, k, policy=CascadePolicy((cheap, other), k)))
        for kk in dict.fromkeys((k, *sweep)):
            # learns: a fresh policy per engine
            out.append(Method(f"cascade {cheap}>{other} rate k={kk}", both, kk,
                              policy_factory=lambda o=other, kk=kk: CascadePolicy((cheap, o), kk, threshold="rate")))
        long, short = max((k, *sweep)), min((k, *sweep))
        if long > short:
            out.append(Method(f"cascade {cheap}>{other} rate k={long}/{short}", both, long,
                              policy_factory=lambda o=other, kl=long, ks=short: CascadePolicy(
                                  (cheap, o), (kl, ks), threshold="rate")))
    return out
