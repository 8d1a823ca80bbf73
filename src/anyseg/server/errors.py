"""Errors the studio's API returns, and how anyseg's own errors map to HTTP statuses.

Every error response is JSON ``{"error": CODE, "detail": MESSAGE}``: a short machine code and a
sentence for the person. Nothing else (no trace) leaves the server.
"""

from __future__ import annotations

from anyseg.errors import (
    AnysegError,
    CheckpointError,
    InvalidInputError,
    MediaError,
    UnknownModelError,
    WeightsUnavailableError,
)


class ApiError(AnysegError):
    """An error with its HTTP status and machine code, raised by the server's own checks."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def not_found(what: str, detail: str) -> ApiError:
    return ApiError(404, f"unknown_{what}", detail)


# Most specific first: the first class an error is an instance of decides.
_STATUS_OF = [
    (WeightsUnavailableError, 503, "model_unavailable"),
    (CheckpointError, 503, "model_unavailable"),
    (UnknownModelError, 400, "unknown_model"),
    (MediaError, 422, "bad_media"),
    (InvalidInputError, 422, "invalid_input"),
]


def status_of(exc: AnysegError) -> tuple[int, str]:
    """The HTTP status and machine code for one of anyseg's errors."""
    if isinstance(exc, ApiError):
        return exc.status, exc.code
    for cls, status, code in _STATUS_OF:
        if isinstance(exc, cls):
            return status, code
    return 409, "invalid_state"  # e.g. an action the object's current state does not allow
