"""EXPIRED job status

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 15:45:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "status IN ('QUEUED','RUNNING','SUCCEEDED','FAILED','CANCELING','CANCELED')"
NEW = "status IN ('QUEUED','RUNNING','SUCCEEDED','FAILED','CANCELING','CANCELED','EXPIRED')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_jobs_status_valid"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_status_valid"), "jobs", NEW)


def downgrade() -> None:
    op.execute("UPDATE jobs SET status = 'SUCCEEDED' WHERE status = 'EXPIRED'")
    op.drop_constraint(op.f("ck_jobs_status_valid"), "jobs", type_="check")
    op.create_check_constraint(op.f("ck_jobs_status_valid"), "jobs", OLD)
