"""GraphQL for tenants: a sign-in link to the tenant portal."""

from __future__ import annotations

from datetime import datetime

import strawberry

from service.graphql_base import GraphQLInfo, or_graphql_error, require
from service.settings import get_settings
from service.tenants import service


@strawberry.type(description="A one-time link that signs a browser in to the tenant portal.")
class PortalSession:
    url: str = strawberry.field(description="{PUBLIC_BASE_URL}/portal/login/{token}: usable once.")
    expires_at: datetime = strawberry.field(description="The link works until then (not the session).")


@strawberry.type
class TenantMutation:
    @strawberry.mutation(
        description="A sign-in link to the portal, valid expiresIn seconds (default 600, at most a day) "
        "and usable once. Any key of the tenant's may ask (the `portal` scope alone is enough): the "
        "portal acts for the whole tenant."
    )
    def create_portal_session(
        self, info: GraphQLInfo, expires_in: int = service.DEFAULT_LINK_TTL_SECONDS
    ) -> PortalSession:
        principal = require(info, None)
        issued = or_graphql_error(
            lambda: service.create_portal_link(
                info.context.session,
                principal.tenant_id,
                created_by=principal.key_id,
                ttl_seconds=expires_in,
                server_secret=get_settings().secret_key,
            )
        )
        return PortalSession(url=issued.url, expires_at=issued.expires_at)
