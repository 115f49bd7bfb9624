"""Tenancy: plan overrides, key last-used time, row-level security for tenant-facing requests

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 16:00:00

Row-level security backs up the repositories' tenant filter. It applies to the NOLOGIN role
``claimcheck_tenant``, which the API takes for each tenant request (``SET LOCAL ROLE`` with the
tenant id in ``app.tenant_id``, both for that transaction only). The service's own login role owns
the tables, so workers, the scheduler and the CLI, which act across tenants, are not filtered. The
role is cluster-wide: created if missing, dropped on downgrade only when no other database uses it.
Creating it needs CREATEROLE (or a superuser) for the migration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Every statement below is built from these constants only (no input): S608 does not apply.
ROLE = "claimcheck_tenant"
TENANT = "current_setting('app.tenant_id', true)"
# Tables with a tenant_id column, and what a tenant request may do to them.
TENANT_TABLES = {
    "api_keys": "SELECT",
    "jobs": "SELECT, INSERT, UPDATE, DELETE",
    "job_events": "SELECT, INSERT, UPDATE, DELETE",
    "webhook_endpoints": "SELECT, INSERT, UPDATE, DELETE",
    "webhook_events": "SELECT, INSERT, UPDATE, DELETE",
    "webhook_deliveries": "SELECT, INSERT, UPDATE, DELETE",
    "webhook_attempts": "SELECT, INSERT, UPDATE, DELETE",
}


def upgrade() -> None:
    op.add_column("tenants", sa.Column("limits", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_tenant_id_status", "jobs", ["tenant_id", "status"])

    op.execute(
        """
        DO $$ BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'claimcheck_tenant') THEN
            CREATE ROLE claimcheck_tenant NOLOGIN NOINHERIT;
          END IF;
        END $$
        """
    )
    op.execute(f"GRANT {ROLE} TO CURRENT_USER")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {ROLE}")
    op.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {ROLE}")

    op.execute(f"GRANT SELECT ON tenants TO {ROLE}")
    op.execute("ALTER TABLE tenants ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY tenant_isolation ON tenants TO {ROLE} USING (id = {TENANT})")
    for table, privileges in TENANT_TABLES.items():
        op.execute(f"GRANT {privileges} ON {table} TO {ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} TO {ROLE} "
            f"USING (tenant_id = {TENANT}) WITH CHECK (tenant_id = {TENANT})"
        )
    # The outbox has no tenant column: a row is visible when its job is (RLS applies inside too).
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON job_outbox TO {ROLE}")
    op.execute("ALTER TABLE job_outbox ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON job_outbox TO {ROLE} "  # noqa: S608
        "USING (EXISTS (SELECT 1 FROM jobs WHERE jobs.id = job_outbox.job_id)) "
        "WITH CHECK (EXISTS (SELECT 1 FROM jobs WHERE jobs.id = job_outbox.job_id))"
    )


def downgrade() -> None:
    for table in ["tenants", "job_outbox", *TENANT_TABLES]:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        op.execute(f"REVOKE ALL ON {table} FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON ALL SEQUENCES IN SCHEMA public FROM {ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {ROLE}")
    op.execute(
        f"""
        DO $$ BEGIN
          DROP ROLE {ROLE};
        EXCEPTION WHEN dependent_objects_still_exist OR object_in_use THEN
          NULL;  -- another database of this cluster still uses it
        END $$
        """
    )
    op.drop_index("ix_jobs_tenant_id_status", table_name="jobs")
    op.drop_column("api_keys", "last_used_at")
    op.drop_column("tenants", "limits")
