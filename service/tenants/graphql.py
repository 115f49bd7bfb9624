"""GraphQL for the calling tenant: ``viewer``."""

from __future__ import annotations

from datetime import datetime

import strawberry

from service.graphql_base import GraphQLInfo, require
from service.jobs.repository import JobRepository
from service.settings import get_settings
from service.tenants.models import Tenant as TenantRow


@strawberry.type
class TenantLimits:
    max_text_chars: int


@strawberry.type
class TenantUsage:
    queued_jobs: int
    running_jobs: int
    total_jobs: int


@strawberry.type
class Tenant:
    id: strawberry.ID
    name: str
    plan: str
    created_at: datetime
    scopes: list[str]

    @strawberry.field
    def limits(self) -> TenantLimits:
        return TenantLimits(max_text_chars=get_settings().speech_max_chars)

    @strawberry.field
    def usage(self, info: GraphQLInfo) -> TenantUsage:
        counts = JobRepository(info.context.session, str(self.id)).count_by_status()
        return TenantUsage(
            queued_jobs=counts.get("QUEUED", 0),
            running_jobs=counts.get("RUNNING", 0) + counts.get("CANCELING", 0),
            total_jobs=sum(counts.values()),
        )


@strawberry.type
class TenantQuery:
    @strawberry.field(description="The tenant whose API key made this request.")
    def viewer(self, info: GraphQLInfo) -> Tenant:
        principal = require(info, None)
        row = info.context.session.get(TenantRow, principal.tenant_id)
        assert row is not None  # the key was just authenticated against it
        return Tenant(
            id=strawberry.ID(row.id),
            name=row.name,
            plan=row.plan,
            created_at=row.created_at,
            scopes=sorted(principal.scopes),
        )
