"""Expiring download tokens for the local backend, signed with itsdangerous."""

from __future__ import annotations

import time
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "claimcheck.download.v1"


class TokenInvalid(Exception):
    """The token was tampered with or not made by us (HTTP 403)."""


class TokenExpired(Exception):
    """The token was ours but its time is up (HTTP 410)."""


@dataclass(frozen=True)
class DownloadGrant:
    key: str
    filename: str
    content_type: str
    expires_at: float


class DownloadTokens:
    """Issues and checks tokens naming one object, its download name and an expiry."""

    def __init__(self, secret_key: str) -> None:
        self._serializer = URLSafeSerializer(secret_key, salt=SALT)

    def issue(self, key: str, *, filename: str, content_type: str, expires_in: int) -> str:
        expires_at = time.time() + expires_in  # a float: whole seconds could leave a 1 s token ~0 s to live
        return self._serializer.dumps({"k": key, "f": filename, "c": content_type, "e": expires_at})

    def check(self, token: str) -> DownloadGrant:
        try:
            payload = self._serializer.loads(token)
        except BadSignature as exc:
            raise TokenInvalid("invalid download token") from exc
        grant = DownloadGrant(
            key=payload["k"], filename=payload["f"], content_type=payload["c"], expires_at=payload["e"]
        )
        if grant.expires_at < time.time():
            raise TokenExpired("this download link has expired; request a new downloadUrl")
        return grant
