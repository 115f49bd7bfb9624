"""portal sign-in: one-time links and browser sessions; tenants manage their own API keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-09 09:00:00

Both tables carry tenant_id and get the same row-level security as the other tenant tables
(migration 0006). Links are claimed and sessions looked up by token hash before the tenant is known,
as API keys are, so that runs as the owner role; a tenant request (createPortalSession, the portal's
pages) may create links, list and end its sessions, and now create and revoke its own API keys.
An index on webhook_deliveries (tenant_id, id) serves the portal's delivery log.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every statement below is built from these constants only (no input): S608 does not apply.
ROLE = "claimcheck_tenant"
TENANT = "current_setting('app.tenant_id', true)"
TABLES = {"portal_links": "SELECT, INSERT", "portal_sessions": "SELECT, INSERT, DELETE"}


def _create(name: str, *extra: sa.Column) -> None:  # type: ignore[type-arg]
    op.create_table(
        name,
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("tenant_id", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        *extra,
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f(f"fk_{name}_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
        sa.UniqueConstraint("token_hash", name=op.f(f"uq_{name}_token_hash")),
    )
    op.create_index(op.f(f"ix_{name}_tenant_id"), name, ["tenant_id"], unique=False)
    op.create_index(op.f(f"ix_{name}_expires_at"), name, ["expires_at"], unique=False)


def upgrade() -> None:
    _create(
        "portal_links",
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
    )
    _create(
        "portal_sessions", sa.Column("link_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False)
    )
    for table, privileges in TABLES.items():
        op.execute(f"GRANT {privileges} ON {table} TO {ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} TO {ROLE} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
        )
    op.execute(f"GRANT INSERT, UPDATE ON api_keys TO {ROLE}")
    # The portal's delivery log: one tenant's deliveries, newest first.
    op.create_index("ix_webhook_deliveries_tenant_id_id", "webhook_deliveries", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_tenant_id_id", table_name="webhook_deliveries")
    op.execute(f"REVOKE INSERT, UPDATE ON api_keys FROM {ROLE}")
    for table in TABLES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"REVOKE ALL ON {table} FROM {ROLE}")
    for name in ("portal_sessions", "portal_links"):
        op.drop_index(op.f(f"ix_{name}_expires_at"), table_name=name)
        op.drop_index(op.f(f"ix_{name}_tenant_id"), table_name=name)
        op.drop_table(name)
