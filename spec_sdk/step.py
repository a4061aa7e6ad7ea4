"""One decoding step for the whole batch: plan, propose, choose, score, verify, commit.

Runs in a worker thread; it is the only code that touches the backend and the proposers,
so neither needs to be thread-safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

import attrs
import torch

from spec_sdk.backends.base import ScoreItem, TargetModel
from spec_sdk.policy import DEFER, Load, Outcome, Policy, StepFeedback
from spec_sdk.proposers.base import Proposer
from spec_sdk.request import Request
from spec_sdk.types import Draft, SpecStats, StepTimes, TokenChunk, first_chain
from spec_sdk.verify import verify_batch

log = logging.getLogger("spec_sdk")


def draft_problem(draft: Draft, budget: int, vocab_size: int) -> str | None:
    """Why a proposer's draft cannot be used, or None when it can."""
    if len(draft) > budget:
        return f"draft of {len(draft)} tokens exceeds the budget {budget}"
    if any(not 0 <= t < vocab_size for t in draft.tokens):
        return "draft holds token ids outside the vocabulary"
    if draft.probs is not None:
        if draft.probs.shape[1] != vocab_size:
            return f"draft probs cover {draft.probs.shape[1]} tokens, the vocabulary has {vocab_size}"
        if not bool(torch.isfinite(draft.probs).all()) or bool((draft.probs < 0).any()):
            return "draft probs are not a distribution"
    return None


@attrs.define
class StepRunner:
    backend: TargetModel
    proposers: Mapping[str, Proposer]
    policy: Policy
    stats: SpecStats
    proposer_stats: dict[str, SpecStats]
    # this step's proposer calls: seconds, and (requests asked, largest budget), per proposer
    _propose_seconds: dict[str, float] = attrs.field(init=False, factory=dict)
    _asked: dict[str, tuple[int, int]] = attrs.field(init=False, factory=dict)

    def prefill(self, reqs: Sequence[Request]) -> dict[str, BaseException]:
        """Add new requests to the backend and the proposers; returns the ones that failed."""
        failed: dict[str, BaseException] = {}
        for req in reqs:
            try:
                self.backend.add(req.id, req.tokens)
                req.started = True
            except Exception as exc:  # a bad request must not take the engine down
                log.exception("prefill failed for %s", req.id)
                failed[req.id] = exc
                continue
            for proposer in self.proposers.values():
                self._safely(proposer.start, req)
        return failed

    def release(self, reqs: Sequence[Request]) -> None:
        """Free everything a finished or cancelled request holds."""
        for req in reqs:
            if req.started:
                self.backend.remove(req.id)
                req.started = False
                for proposer in self.proposers.values():
                    self._safely(proposer.finish, req)
            forget = getattr(self.policy, "forget", None)
            if callable(forget):
                forget(req.id)

    def _safely(self, fn: object, req: Request) -> None:
        try:
            fn(req.view)  # type: ignore[operator]
        except Exception:
            log.exception("proposer hook failed for %s", req.id)
            req.stats.proposer_errors += 1

    def _plans(self, batch: Sequence[Request], load: Load) -> list[list[tuple[str, int]]]:
        """Each request's proposers in the order to ask them, budgets clipped to the room left."""
        plans = []
        for req in batch:
            room = req.room() - 1  # the target always adds one token
            plan = []
            for name, k in self.policy.plan(req.view, load).items():
                if name not in self.proposers:
                    log.error("policy asked for proposer %r, which the engine does not have", name)
                elif min(k, room) > 0:
                    plan.append((name, min(k, room)))
            plans.append(plan)
        return plans

    def _ask(self, name: str, idx: list[int], budgets: list[int], batch: Sequence[Request],
             drafts: list[dict[str, Draft | None]]) -> None:
        """One batched call of one proposer; its failures cost only these drafts."""
        start = time.perf_counter()
        try:
            out = self.proposers[name].propose([batch[i].view for i in idx], budgets)
            if len(out) != len(idx):
                raise ValueError(f"returned {len(out)} drafts for {len(idx)} requests")
        except Exception:
            log.exception("proposer %s failed", name)
            for i in idx:
                batch[i].stats.proposer_errors += 1
                drafts[i][name] = None
            self.proposer_stats.setdefault(name, SpecStats()).proposer_errors += len(idx)
            return
        finally:
            seconds, (n, k) = self._propose_seconds.get(name, 0.0), self._asked.get(name, (0, 0))
            self._propose_seconds[name] = seconds + time.perf_counter() - start
            self._asked[name] = (n + len(idx), max([k, *budgets]))
        for i, budget, draft in zip(idx, budgets, out):
            if draft is not None and len(draft) > 0:
                problem = draft_problem(draft, budget, self.backend.vocab_size)
                if problem is not None:
                    log.warning("proposer %s: %s; draft dropped", name, problem)
                    batch[i].stats.proposer_errors += 1
                    self.proposer_stats.setdefault(name, SpecStats()).proposer_errors += 1
                    draft = None
            drafts[i][name] = draft if draft is not None and len(draft) > 0 else None

    def _propose(self, batch: Sequence[Request], load: Load) -> list[tuple[str, Draft] | None]:
        """Ask proposers in rounds, in plan order: after each round the policy picks a draft
        or defers to the request's next proposer (a cascade asks the expensive one only when
        the cheap one's draft is not good enough)."""
        begin = getattr(self.policy, "begin_step", None)
        if callable(begin):
            begin([r.view for r in batch], load, list(self.proposers))
        plans = self._plans(batch, load)
        drafts: list[dict[str, Draft | None]] = [{} for _ in batch]
        picked: list[Draft | None] = [None] * len(batch)
        pending = [i for i, plan in enumerate(plans) if plan]
        stage = 0
        while pending:
            asked: dict[str, tuple[list[int], list[int]]] = {}
            for i in pending:
                name, k = plans[i][stage]
                idx, budgets = asked.setdefault(name, ([], []))
                idx.append(i)
                budgets.append(k)
            for name, (idx, budgets) in asked.items():
                self._ask(name, idx, budgets, batch, drafts)
            stage += 1
            deferred = []
            for i in pending:
                choice = self.policy.choose(batch[i].view, drafts[i])
                if choice is DEFER:
                    if stage < len(plans[i]):
                        deferred.append(i)
                else:
                    picked[i] = choice
            pending = deferred
        chosen: list[tuple[str, Draft] | None] = []
        for draft, options in zip(picked, drafts):
            if draft is None or len(draft) == 0:
                chosen.append(None)
                continue
            name = next((n for n, d in options.items() if d is draft), draft.source or "unknown")
            # A tree goes to the backend whole only if it can score one; else its first chain.
            chosen.append((name, draft if getattr(self.backend, "supports_trees", False) else first_chain(draft)))
        return chosen

    @staticmethod
    def _feedback(hook: object, fb: StepFeedback) -> None:
        try:
            hook(fb)  # type: ignore[operator]
        except Exception:  # a policy that fails to learn must not fail the batch's requests
            log.exception("policy feedback failed")

    def step(self, batch: Sequence[Request], waiting: int) -> list[TokenChunk]:
        t0 = time.perf_counter()
        self._propose_seconds, self._asked = {}, {}
        picks = self._propose(batch, Load(batch_size=len(batch), waiting=waiting))
        drafts = [p[1] if p is not None else None for p in picks]
        t1 = time.perf_counter()
        want_hidden = any(p.needs_hidden_states for p in self.proposers.values())
        items = [ScoreItem(req.id, req.tokens[-1], d, want_hidden) for req, d in zip(batch, drafts)]
        scored = self.backend.score(items)
        t2 = time.perf_counter()
        verdicts = verify_batch(
            [s.logits for s in scored], drafts, [r.params for r in batch], [r.step_draws() for r in batch]
        )
        t3 = time.perf_counter()
        chunks = []
        outcomes = []
        for req, pick, res, verdict in zip(batch, picks, scored, verdicts):
            self.backend.commit(req.id, verdict.path)
            chunk = req.append(verdict.tokens, verdict.num_accepted)
            chunks.append(chunk)
            drafted = len(pick[1]) if pick is not None else 0
            outcomes.append(Outcome(req.id, pick[0] if pick is not None else None, drafted, verdict.num_accepted,
                                    len(chunk.token_ids), req.params.greedy, tuple(chunk.token_ids),
                                    verdict.token_chances, verdict.chances))
            req.stats.record(drafted, verdict.num_accepted, len(chunk.token_ids))
            self.stats.record(drafted, verdict.num_accepted, len(chunk.token_ids))
            if pick is not None:
                self.proposer_stats.setdefault(pick[0], SpecStats()).record(
                    drafted, verdict.num_accepted, len(chunk.token_ids)
                )
            hidden = None
            if res.hidden is not None:
                hidden = res.hidden[[0, *(1 + p for p in verdict.path)]]
            for proposer in self.proposers.values():
                try:
                    proposer.observe(req.view, chunk.token_ids, hidden)
                except Exception:
                    log.exception("proposer %s observe failed", proposer.name)
                    req.stats.proposer_errors += 1
        t4 = time.perf_counter()
        feedback = getattr(self.policy, "feedback", None)
        if callable(feedback):
            self._feedback(feedback, StepFeedback(
                batch_size=len(batch),
                draft_tokens=sum(len(d) for d in drafts if d is not None),
                score_seconds=t2 - t1,
                other_seconds=(t1 - t0 - sum(self._propose_seconds.values())) + (t4 - t2),
                propose_seconds=dict(self._propose_seconds),
                asked=dict(self._asked),
                outcomes=outcomes,
            ))
        times = StepTimes(propose=t1 - t0, score=t2 - t1, verify=t3 - t2, bookkeeping=t4 - t3)
        self.stats.times.add(times)
        share = 1.0 / len(batch)
        for req in batch:
            req.stats.times.add(
                StepTimes(times.propose * share, times.score * share, times.verify * share, times.bookkeeping * share)
            )
        return chunks
