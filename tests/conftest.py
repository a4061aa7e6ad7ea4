"""Shared fixtures and hypothesis profiles.

HYPOTHESIS_PROFILE=thorough multiplies the number of generated cases (default profile: ci).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.register_profile(
    "thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# How many cases the engine-level property tests generate, per proposer.
ENGINE_EXAMPLES = {"ci": 50, "thorough": 400}[os.environ.get("HYPOTHESIS_PROFILE", "ci")]


@pytest.fixture(scope="session")
def tiny_model():
    from spec_sdk.testing import tiny_llama

    return tiny_llama(seed=0)


@pytest.fixture
def anyio_backend(request):
    return getattr(request, "param", "asyncio")
