"""trace context on jobs and webhook events

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 15:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("trace_context", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.add_column(
        "webhook_events", sa.Column("trace_context", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("webhook_events", "trace_context")
    op.drop_column("jobs", "trace_context")
