"""Standard Webhooks for Claimcheck's partners and for Claimcheck itself: verify deliveries
(`verify`), sign them (`signing`), make and read keys (`keys`), act once per webhook-id (`dedupe`).

A library on its own (`pip install ./callbacks`): it imports nothing of the service, which imports it
to sign. `callbacks.examples.receiver` is a receiver built with it."""

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
