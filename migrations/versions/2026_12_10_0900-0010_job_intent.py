"""job intent: priority and deadline on every job, and the dead letter

Revision ID: 0010_job_intent
Revises: 0009
Create Date: 2026-12-10 09:00:00

Expand only: new nullable columns, and priority with a server default, so rows and code written
before it keep working. Partial indexes serve the dead-letter listing and the deadline sweep.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_job_intent"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("priority", sa.String(length=10), server_default="NORMAL", nullable=False)
    )
    op.add_column("jobs", sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("at_risk_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("dead_lettered_at", sa.DateTime(timezone=True), nullable=True))
    op.create_check_constraint(op.f("ck_jobs_priority_valid"), "jobs", "priority IN ('HIGH','NORMAL','LOW')")
    op.create_index(
        "ix_jobs_dead_lettered_at",
        "jobs",
        ["dead_lettered_at"],
        postgresql_where=sa.text("dead_lettered_at IS NOT NULL"),
    )
    op.create_index(
        "ix_jobs_deadline_at",
        "jobs",
        ["deadline_at"],
        postgresql_where=sa.text("deadline_at IS NOT NULL AND status IN ('QUEUED','RUNNING')"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_deadline_at", table_name="jobs")
    op.drop_index("ix_jobs_dead_lettered_at", table_name="jobs")
    op.drop_constraint(op.f("ck_jobs_priority_valid"), "jobs", type_="check")
    op.drop_column("jobs", "dead_lettered_at")
    op.drop_column("jobs", "at_risk_at")
    op.drop_column("jobs", "deadline_at")
    op.drop_column("jobs", "priority")
