"""What a speculator training run does: the speculator's shape, the distillation data, the
optimisation. Two recipes sized for a 2-core CPU: `tiny` (the tiny zoo, a CI test in well under
two minutes) and `full` (the committed full-zoo speculators, tens of minutes on one thread)."""

from __future__ import annotations

from typing import Literal

import attrs

from spec_sdk.errors import ConfigError

Arch = Literal["mlp", "lstm"]
Labels = Literal["hard", "argmax", "soft"]


@attrs.frozen
class TrainConfig:
    arch: Arch = "mlp"
    # the speculator
    n_predict: int = 4
    inner_dim: int = 256
    tie_weights: bool = True  # one embedding and one LM head for all heads: a quarter of the size
    scale_input: bool = True
    # the distillation data: the target continues prompt chunks of the zoo's training text
    prompts: int = 6000
    heldout_prompts: int = 200
    prompt_len: int = 64
    gen_len: int = 64
    sample_share: float = 0.5  # share of continuations sampled (at `temperature`) instead of greedy
    temperature: float = 0.8
    rollout_batch: int = 64
    # what head i learns at position t (see loop.py): "hard" = the sequence's token 2+i places
    # ahead (the reference recipe); "argmax" = the target's greedy token there; "soft" = the
    # target's whole distribution there
    labels: Labels = "argmax"
    use_prompt: bool = False  # also train on the prompt's positions (the corpus's own tokens)
    # optimisation
    steps: int = 1500
    batch_size: int = 32  # sequences per step; every position of each is used
    lr: float = 3e-3
    warmup: int = 40
    weight_decay: float = 0.01
    checkpoint_every: int = 200
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        if self.arch not in ("mlp", "lstm"):
            raise ConfigError(f"arch must be 'mlp' or 'lstm', got {self.arch!r}")
        if self.labels not in ("hard", "argmax", "soft"):
            raise ConfigError(f"labels must be 'hard', 'argmax' or 'soft', got {self.labels!r}")
        for name in ("n_predict", "inner_dim", "prompts", "heldout_prompts", "prompt_len", "gen_len", "steps",
                     "batch_size", "rollout_batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gen_len < self.n_predict + 2:
            raise ConfigError(f"gen_len ({self.gen_len}) must exceed n_predict + 1 so every head has a label")
        if not 0.0 <= self.sample_share <= 1.0 or self.temperature <= 0:
            raise ConfigError("sample_share must be in [0, 1] and temperature > 0")

    def data_key(self) -> tuple:
        """The fields the distillation data depends on (both archs share one data cache)."""
        return (self.prompts, self.heldout_prompts, self.prompt_len, self.gen_len, self.sample_share,
                self.temperature, self.seed)


RECIPES: dict[str, TrainConfig] = {
    # ~1 min on one thread of a shared 2-core CPU, most of it reading the corpus.
    "tiny": TrainConfig(inner_dim=64, prompts=320, heldout_prompts=48, prompt_len=32, gen_len=32,
                        rollout_batch=64, steps=250, batch_size=16, lr=5e-3, warmup=20, checkpoint_every=50),
    "full": TrainConfig(),
}


def recipe(name: str, **overrides: object) -> TrainConfig:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return attrs.evolve(RECIPES[name], **{k: v for k, v in overrides.items() if v is not None})
