"""webhook events carry their job's artifact key, so the deliverer never reads the jobs table

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 07:00:00

Expand step: the column is added and filled from the jobs table for job.succeeded events already
written; code from this release reads only the column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("webhook_events", sa.Column("artifact_key", sa.String(length=500), nullable=True))
    op.execute(
        """
        UPDATE webhook_events e SET artifact_key = j.artifact_key
        FROM jobs j
        WHERE e.job_id = j.id AND e.type = 'job.succeeded' AND j.status = 'SUCCEEDED'
        """
    )


def downgrade() -> None:
    op.drop_column("webhook_events", "artifact_key")
