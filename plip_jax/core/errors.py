"""The project's error types: one-line faults that the CLIs print without a traceback."""
from __future__ import annotations


class ConfigError(ValueError):
    """A config that cannot run; raised before anything is compiled."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN/Inf; the last good checkpoint is kept."""
