"""Webhook signing, verification and delivery; signing and verification import nothing from service/."""

from callbacks.errors import (
    FutureTimestampError,
    InvalidPayloadError,
    InvalidTimestampError,
    MalformedHeaderError,
    MalformedKeyError,
    MissingHeaderError,
    NoMatchingSignatureError,
    StaleTimestampError,
    WebhookVerificationError,
)
from callbacks.verify import verify

__all__ = [
    "FutureTimestampError",
    "InvalidPayloadError",
    "InvalidTimestampError",
    "MalformedHeaderError",
    "MalformedKeyError",
    "MissingHeaderError",
    "NoMatchingSignatureError",
    "StaleTimestampError",
    "WebhookVerificationError",
    "verify",
]
