"""an index for the deliverer's claim: each endpoint's pending deliveries in due order

Revision ID: 0012_delivery_indexes
Revises: 0009
Create Date: 2026-12-12 09:00:00

The claim walks the endpoints that have pending deliveries (a skip scan of this index, one probe
each) and reads only the first due ones of each, so its cost follows what it claims rather than the
size of the backlog.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_delivery_indexes"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_webhook_deliveries_pending",
        "webhook_deliveries",
        ["endpoint_id", "next_attempt_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'PENDING'"),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_pending", table_name="webhook_deliveries")
