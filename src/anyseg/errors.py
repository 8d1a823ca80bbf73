"""Exceptions raised by anyseg.

Every error a user can cause (bad input, missing weights, unknown names) is an
:class:`AnysegError`, so callers (the CLI, the server) can turn it into a clear
message instead of a traceback.
"""


class AnysegError(Exception):
    """Base class of every error anyseg raises on purpose."""


class InvalidInputError(AnysegError, ValueError):
    """An argument has the wrong type, shape, dtype or range."""


class UnknownModelError(AnysegError, KeyError):
    """A model name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(AnysegError, RuntimeError):
    """Official weights could not be found, downloaded or verified."""


class CheckpointError(AnysegError, RuntimeError):
    """A checkpoint file is truncated, foreign, or does not fit the model."""


class MediaError(AnysegError, ValueError):
    """An image or video cannot be decoded."""
