"""Who is calling: what authentication yields and what every domain checks scopes against."""

from __future__ import annotations

from dataclasses import dataclass

from service.plans import Limits


@dataclass(frozen=True)
class Principal:
    """A tenant, the API key it called with, that key's scopes, and the tenant's limits when it
    authenticated (its queries' rate limit reads them there)."""

    tenant_id: str
    key_id: str
    scopes: frozenset[str]
    limits: Limits
