"""GraphQL ``viewer``: the calling tenant with its plan's limits and its usage across the domains."""

from __future__ import annotations

from datetime import datetime

import strawberry

from service.graphql_base import GraphQLInfo, require
from service.jobs.priority import highest_allowed
from service.jobs.service import count_by_status
from service.settings import get_settings
from service.tenants.service import get_tenant, limits_for
from service.webhooks.service import count_endpoints


@strawberry.type(description="The tenant's plan limits (with its own overrides).")
class TenantLimits:
    max_text_chars: int
    mutations_per_minute: int = strawberry.field(description="Job-creating mutations; 0: unlimited.")
    burst: int = strawberry.field(description="Mutations allowed at once above the steady rate.")
    max_running: int = strawberry.field(description="Jobs running at once; more wait in the queue.")
    max_queued: int = strawberry.field(description="Jobs waiting at once; more: QUOTA_EXCEEDED.")
    max_webhook_endpoints: int
    queries_per_minute: int = strawberry.field(description="Queries; 0: unlimited.")
    query_burst: int = strawberry.field(description="Queries allowed at once above the steady rate.")
    max_priority: str = strawberry.field(description="The highest job priority allowed: HIGH, NORMAL or LOW.")


@strawberry.type
class TenantUsage:
    queued_jobs: int
    running_jobs: int
    total_jobs: int
    webhook_endpoints: int


@strawberry.type
class Tenant:
    id: strawberry.ID
    name: str
    plan: str
    created_at: datetime
    scopes: list[str]

    @strawberry.field
    def limits(self, info: GraphQLInfo) -> TenantLimits:
        limits = limits_for(info.context.session, str(self.id))
        return TenantLimits(
            max_text_chars=min(limits.max_text_chars, get_settings().speech_max_chars),
            mutations_per_minute=limits.mutations_per_minute,
            burst=limits.burst,
            max_running=limits.max_running,
            max_queued=limits.max_queued,
            max_webhook_endpoints=limits.max_webhook_endpoints,
            queries_per_minute=limits.queries_per_minute,
            query_burst=limits.query_burst,
            max_priority=highest_allowed(limits.max_priority),
        )

    @strawberry.field
    def usage(self, info: GraphQLInfo) -> TenantUsage:
        session = info.context.session
        counts = count_by_status(session, str(self.id))
        return TenantUsage(
            queued_jobs=counts.get("QUEUED", 0),
            running_jobs=counts.get("RUNNING", 0) + counts.get("CANCELING", 0),
            total_jobs=sum(counts.values()),
            webhook_endpoints=count_endpoints(session, str(self.id)),
        )


@strawberry.type
class TenantQuery:
    @strawberry.field(description="The tenant whose API key made this request.")
    def viewer(self, info: GraphQLInfo) -> Tenant:
        principal = require(info, None)
        row = get_tenant(info.context.session, principal.tenant_id)
        return Tenant(
            id=strawberry.ID(row.id),
            name=row.name,
            plan=row.plan,
            created_at=row.created_at,
            scopes=sorted(principal.scopes),
        )
