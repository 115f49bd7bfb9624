"""What counts as a secret in text, and how it is blanked: one list for logs and for spans."""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_VALUE = r"(?:(?:bearer|basic)\s+)?[^\s\"',;&}\]]+"
PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # key=value and "key": "value" pairs whose key names a secret (the value may be "Bearer xyz")
    (
        re.compile(
            r"(?i)(\b\w*(?:authorization|password|passwd|secret|api[_-]?key|access[_-]?token|private[_-]?key)\w*"
            r"[\"']?\s*[:=]\s*[\"']?)" + _VALUE
        ),
        r"\1" + REDACTED,
    ),
    # Claimcheck API keys: the prefix is not secret (it is shown in listings) and helps debugging
    (re.compile(r"\b(ck_[0-9a-f]{8}_)[A-Za-z0-9_\-]+"), r"\1" + REDACTED),
    # webhook HMAC secrets and ed25519 private keys (whpk_ public keys are not secret)
    (re.compile(r"\b(whsec_|whsk_)[A-Za-z0-9+/=_\-]+"), r"\1" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"), r"\1 " + REDACTED),
    # user:password@ in URLs (database and Redis URLs)
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]+@"), r"\1" + REDACTED + "@"),
    # GCS V4 signed URLs and local download tokens grant access while they last
    (re.compile(r"(?i)\b(X-Goog-Signature=)[0-9a-f]+"), r"\1" + REDACTED),
    (re.compile(r"(/downloads/)[A-Za-z0-9._\-]{16,}"), r"\1" + REDACTED),
]


# What each pattern above needs to find at all; text with none of it (most log lines and span
# attributes) is returned after one scan instead of one per pattern. Keep it in step with PATTERNS.
_CANDIDATE = re.compile(
    r"(?i)authorization|passw|secret|api[_-]?key|access[_-]?token|private[_-]?key|ck_|whsec_|whsk_"
    r"|bearer|basic|://[^\s:/@]*:[^\s@/]+@|x-goog-signature=|/downloads/"
)


def redact(text: str) -> str:
    """The text with everything that looks like a secret replaced by ``[REDACTED]``."""
    if _CANDIDATE.search(text) is None:
        return text
    for pattern, replacement in PATTERNS:
        text = pattern.sub(replacement, text)
    return text
