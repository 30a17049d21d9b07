"""sweep attempt and Ray Job id

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 12:00:00.000000

Plain ADD COLUMNs (no table rebuild on SQLite), so the 0004 views stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('sweep', sa.Column('attempt', sa.Integer(), server_default='0', nullable=False))
    op.add_column('sweep', sa.Column('ray_job_id', sa.String(length=200), nullable=True))


def downgrade() -> None:
    # Native DROP COLUMN (SQLite >= 3.35, PostgreSQL): no batch rebuild under the views.
    op.execute('ALTER TABLE sweep DROP COLUMN ray_job_id')
    op.execute('ALTER TABLE sweep DROP COLUMN attempt')
