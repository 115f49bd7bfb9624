"""webhook contract: per-endpoint rate limit, timeout and retry schedule; endpoint health; attempts'
headers; deliveries carry their job (per-job order, the log's job filter); the log's indexes

Revision ID: 0011_webhook_contract
Revises: 0012_delivery_indexes (on main: 0009; the lead re-chains)
Create Date: 2026-12-11 09:00:00

Expand step: every new column is nullable or has a default. Deliveries get their job id from their
event (all of them, so the log's job filter finds old ones too). Indexes are built inside the
migration's transaction; on a large table build them CONCURRENTLY by hand first (IF NOT EXISTS makes
this step skip them).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011_webhook_contract"
down_revision: str | None = "0012_delivery_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_webhook_deliveries_tenant_id_status_id": "webhook_deliveries (tenant_id, status, id)",
    "ix_webhook_deliveries_tenant_id_job_id_id": "webhook_deliveries (tenant_id, job_id, id)",
    "ix_webhook_deliveries_endpoint_id_job_id_id": "webhook_deliveries (endpoint_id, job_id, id)"
    " WHERE status = 'PENDING' AND job_id IS NOT NULL",
    "ix_webhook_events_tenant_id_type_id": "webhook_events (tenant_id, type, id)",
    "ix_webhook_events_created_at": "webhook_events (created_at)",
}


def upgrade() -> None:
    op.add_column(
        "webhook_endpoints", sa.Column("failing_alerts", sa.Integer(), nullable=False, server_default="0")
    )
    op.alter_column("webhook_endpoints", "failing_alerts", server_default=None)
    op.add_column(
        "webhook_endpoints", sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("webhook_endpoints", sa.Column("last_error", sa.String(length=500), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("rate_limit_per_second", sa.Float(), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("timeout_seconds", sa.Float(), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("rate_tat", sa.DateTime(timezone=True), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("retry_schedule", JSONB(), nullable=True))
    op.add_column("webhook_deliveries", sa.Column("job_id", sa.String(length=40), nullable=True))
    op.add_column("webhook_attempts", sa.Column("request_headers", JSONB(), nullable=True))
    op.add_column("webhook_attempts", sa.Column("response_headers", JSONB(), nullable=True))
    op.execute(
        """
        UPDATE webhook_deliveries d SET job_id = e.job_id
        FROM webhook_events e
        WHERE e.id = d.event_id AND e.job_id IS NOT NULL
        """
    )
    for name, definition in INDEXES.items():
        op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {definition}")


def downgrade() -> None:
    for name in INDEXES:
        op.execute(f"DROP INDEX IF EXISTS {name}")
    op.drop_column("webhook_attempts", "response_headers")
    op.drop_column("webhook_attempts", "request_headers")
    op.drop_column("webhook_deliveries", "job_id")
    for column in (
        "retry_schedule",
        "rate_tat",
        "timeout_seconds",
        "rate_limit_per_second",
        "last_error",
        "last_success_at",
        "failing_alerts",
    ):
        op.drop_column("webhook_endpoints", column)
