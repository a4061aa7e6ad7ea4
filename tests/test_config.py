"""Configuration: the typed form, the vLLM/Arctic dict, the registry and the fixed policy."""

from __future__ import annotations

import pytest

import spec_sdk
from spec_sdk import ConfigError, FixedPolicy, ProposerNotFoundError, SpecEngine
from spec_sdk.config import parse_speculative_config
from spec_sdk.proposers import registry
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import TableTarget


def test_builtin_proposers_come_from_entry_points():
    assert "ngram" in registry.available()
    assert isinstance(registry.create("ngram", max_n=3), NgramProposer)
    with pytest.raises(ProposerNotFoundError, match="no proposer named 'nope'"):
        registry.create("nope")


def test_vllm_style_dict_maps_names_and_options():
    specs, k, policy = parse_speculative_config(
        {"method": "ngram", "num_speculative_tokens": 7, "prompt_lookup_min": 2, "prompt_lookup_max": 5}
    )
    assert k == 7 and specs == [("ngram", {"min_n": 2, "max_n": 5})] and policy is None
    engine = SpecEngine(TableTarget(vocab_size=4), speculative_config={"method": "ngram", "prompt_lookup_max": 3})
    proposer = engine.proposers["ngram"]
    assert isinstance(proposer, NgramProposer) and proposer.max_n == 3
    assert engine.policy == FixedPolicy("ngram", 4)


def test_bad_config_raises_typed_errors():
    with pytest.raises(ConfigError, match="unknown speculative method"):
        parse_speculative_config({"method": "telepathy"})
    with pytest.raises(ConfigError, match="without a 'method'"):
        parse_speculative_config({"prompt_lookup_max": 3})
    with pytest.raises(ConfigError):
        SpecEngine(TableTarget(vocab_size=4), admission="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SpecEngine(TableTarget(vocab_size=4), proposers=["ngram", NgramProposer()])  # duplicate name
    with pytest.raises(ConfigError):
        NgramProposer(min_n=3, max_n=2)


def test_locally_registered_proposer_is_found_by_name():
    registry.register("ngram-short", lambda **kw: NgramProposer(max_n=2, **kw))
    try:
        engine = SpecEngine(TableTarget(vocab_size=4), proposers=["ngram-short"])
        assert engine.proposers["ngram"].max_n == 2
    finally:
        registry._local.pop("ngram-short")


def test_public_api_is_small_and_documented():
    for name in spec_sdk.__all__:
        obj = getattr(spec_sdk, name)
        assert obj.__doc__, f"{name} has no docstring"
    assert len(spec_sdk.__all__) < 40
