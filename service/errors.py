"""One error base class for everything a caller can act on, rendered one way (as a userError)."""

from __future__ import annotations


class ClaimcheckError(Exception):
    """An error the caller caused or can act on, with a stable code."""

    code = "INTERNAL"

    def __init__(self, message: str, *, field: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationError(ClaimcheckError):
    code = "VALIDATION"


class NotFoundError(ClaimcheckError):
    code = "NOT_FOUND"


class ForbiddenError(ClaimcheckError):
    """The caller's API key lacks a scope this needs."""

    code = "FORBIDDEN"


class InvalidStateError(ClaimcheckError):
    code = "INVALID_STATE"


class IdempotencyConflictError(ClaimcheckError):
    code = "IDEMPOTENCY_CONFLICT"


class QuotaExceededError(ClaimcheckError):
    code = "QUOTA_EXCEEDED"


class RateLimitedError(ClaimcheckError):
    """Too many requests: try again in ``retry_after`` seconds (also sent as ``Retry-After``)."""

    code = "RATE_LIMITED"

    def __init__(self, retry_after: int, *, field: list[str] | None = None) -> None:
        super().__init__(f"rate limit exceeded; retry after {retry_after} seconds", field=field)
        self.retry_after = retry_after

    @property
    def extensions(self) -> dict[str, int]:
        return {"retryAfter": self.retry_after}
