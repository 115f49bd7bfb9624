"""Where the API is and which key to use: CLAIMCHECK_API_URL and CLAIMCHECK_API_KEY."""

from __future__ import annotations

import os
from dataclasses import dataclass

from service.client.errors import AuthenticationError, ValidationError

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "EXPIRED"})


@dataclass(frozen=True)
class ClientSettings:
    url: str
    api_key: str

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValidationError(f"the API URL must start with http:// or https:// (got {self.url!r})")

    @classmethod
    def from_env(cls) -> ClientSettings:
        key = os.environ.get("CLAIMCHECK_API_KEY", "").strip()
        if not key:
            raise AuthenticationError(
                "CLAIMCHECK_API_KEY is not set: export a key of the tenant's"
                " (`claimcheck tenants create NAME` prints one)"
            )
        return cls(os.environ.get("CLAIMCHECK_API_URL", DEFAULT_URL).rstrip("/") or DEFAULT_URL, key)

    @property
    def graphql_url(self) -> str:
        return f"{self.url.rstrip('/')}/graphql"

    @property
    def websocket_url(self) -> str:
        return "ws" + self.graphql_url.removeprefix("http")
