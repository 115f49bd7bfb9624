"""Helpers for the tenancy tests: a tenant's own limits, straight into its row."""

from __future__ import annotations

from typing import Any

from service.db import session_scope
from service.tenants.limits import get_rate_limiter
from service.tenants.models import Tenant


def set_limits(tenant_id: str, **limits: Any) -> None:
    """Override the tenant's plan limits (tenants.limits) and empty its rate-limit bucket."""
    with session_scope() as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        tenant.limits = {**(tenant.limits or {}), **limits}
        session.add(tenant)
    get_rate_limiter().reset(tenant_id)
