"""Distillation of MLP and LSTM speculators from a frozen target (`spec-sdk train-speculator`).

The target continues prompt chunks of the zoo's training text (data.py), each head learns the
token 2+i places ahead under teacher forcing on the target's recorded hidden states (loop.py),
and held-out per-head accuracy is reported beside unigram and bigram baselines (evaluate.py).
"""

from spec_sdk.training.recipe import RECIPES, TrainConfig, recipe
from spec_sdk.training.run import run

__all__ = ["RECIPES", "TrainConfig", "recipe", "run"]
