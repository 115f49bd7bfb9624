"""Errors raised when a delivery fails verification or a key is malformed; each has a stable `code`."""

from __future__ import annotations

from typing import ClassVar


class WebhookVerificationError(Exception):
    """A delivery did not verify. Answer it with a 4xx; `code` is stable, the message is for people."""

    code: ClassVar[str] = "WEBHOOK_INVALID"


class MissingHeaderError(WebhookVerificationError):
    """A required `webhook-*` header is absent or empty."""

    code = "MISSING_HEADER"

    def __init__(self, header: str) -> None:
        super().__init__(f"the {header} header is missing or empty")
        self.header = header


class MalformedHeaderError(WebhookVerificationError):
    """A `webhook-*` header is overlong, has too many signatures, or holds what no sender sends."""

    code = "MALFORMED_HEADER"

    def __init__(self, header: str, problem: str) -> None:
        super().__init__(f"the {header} header {problem}")
        self.header = header


class InvalidTimestampError(WebhookVerificationError):
    """`webhook-timestamp` is not Unix seconds."""

    code = "INVALID_TIMESTAMP"


class StaleTimestampError(WebhookVerificationError):
    """`webhook-timestamp` is older than the tolerance: possibly a replay."""

    code = "TIMESTAMP_TOO_OLD"


class FutureTimestampError(WebhookVerificationError):
    """`webhook-timestamp` is further in the future than the tolerance."""

    code = "TIMESTAMP_TOO_NEW"


class NoMatchingSignatureError(WebhookVerificationError):
    """No signature in `webhook-signature` matches any of the keys: wrong key or tampered delivery."""

    code = "NO_MATCHING_SIGNATURE"


class InvalidPayloadError(WebhookVerificationError):
    """The signed body is not a JSON object."""

    code = "INVALID_PAYLOAD"


class MalformedKeyError(WebhookVerificationError, ValueError):
    """A configured key is not a well-formed `whsec_`, `whsk_` or `whpk_` key.

    This is a configuration error, not a bad delivery: answer 500, or better, decode keys at start-up.
    """

    code = "MALFORMED_KEY"
