"""Who is calling: what authentication yields and what every domain checks scopes against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """A tenant, the API key it called with, and that key's scopes."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]
