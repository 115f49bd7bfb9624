"""Helpers for the tenancy tests: a tenant's own limits, straight into its row."""

from __future__ import annotations

from typing import Any

from service.db import session_scope
from service.tenants import service
from service.tenants.limits import get_rate_limiter


def set_limits(tenant_id: str, **limits: Any) -> None:
    """Override the tenant's plan limits (tenants.limits) and empty its rate-limit bucket."""
    with session_scope() as session:
        service.set_limits(session, tenant_id, overrides=limits)
    get_rate_limiter().reset(tenant_id)
