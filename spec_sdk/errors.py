"""Typed errors raised at the SDK's door, so callers can tell bad input from engine trouble."""

from __future__ import annotations


class SpecError(Exception):
    """Base class of every error the SDK raises on purpose."""


class InvalidRequestError(SpecError, ValueError):
    """The request itself is wrong: bad token ids, empty or over-long prompt, bad sampling params."""


class EngineFullError(SpecError):
    """Admission is bounded and the engine is at capacity (raised when admission='reject')."""


class EngineClosedError(SpecError):
    """The engine is not running (used outside `async with`, or already shut down)."""


class ProposerNotFoundError(SpecError, LookupError):
    """No proposer is registered under the requested name."""


class ConfigError(SpecError, ValueError):
    """A configuration value or dict cannot be understood."""


class RequestFailedError(SpecError):
    """The model failed while running this request; the engine keeps serving the others."""
