"""A custom proposer in a few dozen lines, registered by name and proved lossless.

    .venv/bin/python examples/custom_proposer.py                 # the full check (a few minutes)
    .venv/bin/python examples/custom_proposer.py --examples 4 --samples 300 --model tiny

`BigramProposer` keeps, per request, how often each token followed each other token, and
drafts by walking the most frequent successors while their chained frequency stays above
`min_prob`. A package would register it under the entry-point group "spec_sdk.proposers";
a script registers it in-process with `spec_sdk.register_proposer`.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Sequence

import torch

import spec_sdk
from spec_sdk import Draft, RequestView
from spec_sdk.testing import check_lossless
from spec_sdk.zoo import default_model_dir, resolve


class BigramProposer:
    name = "bigram"
    needs_hidden_states = False

    def __init__(self, min_prob: float = 0.2) -> None:
        self.min_prob = min_prob
        self._next: dict[str, defaultdict[int, Counter[int]]] = {}
        self._seen: dict[str, int] = {}  # tokens already counted, so each step adds only new pairs

    def start(self, req: RequestView) -> None:
        self._next[req.id] = defaultdict(Counter)
        self._seen[req.id] = 0
        self._count(req)

    def observe(self, req: RequestView, accepted: Sequence[int], hidden: torch.Tensor | None) -> None:
        self._count(req)

    def finish(self, req: RequestView) -> None:
        self._next.pop(req.id, None)
        self._seen.pop(req.id, None)

    def _count(self, req: RequestView) -> None:
        tokens, table = req.tokens, self._next[req.id]
        for i in range(max(self._seen[req.id], 1), len(tokens)):
            table[tokens[i - 1]][tokens[i]] += 1
        self._seen[req.id] = len(tokens)

    def propose(self, reqs: Sequence[RequestView], budgets: Sequence[int]) -> list[Draft | None]:
        return [self._draft(req, k) for req, k in zip(reqs, budgets)]

    def _draft(self, req: RequestView, k: int) -> Draft | None:
        table, token = self._next[req.id], req.tokens[-1]
        tokens: list[int] = []
        prob, score = 1.0, 0.0
        while len(tokens) < k and (successors := table.get(token)):
            token, count = successors.most_common(1)[0]
            prob *= count / successors.total()
            if prob < self.min_prob:
                break
            tokens.append(token)
            score += prob  # the expected number of accepted tokens, which policies compare
        # deterministic: no `probs`, so verification treats each token as drawn with q = 1
        return Draft(tokens=tokens, score=score, source=self.name) if tokens else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=20, help="hypothesis cases of the greedy check")
    parser.add_argument("--samples", type=int, default=3000, help="sampled requests of the chi-square check")
    parser.add_argument("--model", default=str(default_model_dir()), help="zoo variant (tiny, full) or model dir")
    args = parser.parse_args(argv)

    spec_sdk.register_proposer("bigram", BigramProposer)
    assert "bigram" in spec_sdk.available_proposers()

    # Losslessness first: greedy equality against target-only decoding, then the sampled
    # output distribution against the exactly enumerated one.
    report = check_lossless(
        lambda target: spec_sdk.create_proposer("bigram"), greedy_examples=args.examples, sampling_samples=args.samples
    )
    print(
        f"lossless: {report.greedy_requests} greedy requests in {report.greedy_cases} batches equal target-only; "
        f"{report.samples} samples match the target distribution (chi2={report.chi2:.1f}, dof={report.dof}, "
        f"p={report.p_value:.3f}); {report.accepted}/{report.drafted} draft tokens accepted"
    )

    # Then by name, like any built-in proposer, on a real model.
    prompt = "for i in range(10):\n    print(i)\nfor j in range(10):\n    print(j)\nfor k in range(10):\n"
    done = spec_sdk.generate(str(resolve(args.model)), prompt, proposers=["bigram"], max_new_tokens=48)
    print(prompt + (done.text or ""))
    print(f"--- mean accepted length {done.stats.mean_accepted_length:.2f} over {done.stats.steps} target forwards")


if __name__ == "__main__":
    main()
