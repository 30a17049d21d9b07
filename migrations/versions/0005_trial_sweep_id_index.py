"""trial (sweep_id, id) index for keyset pages

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 12:12:00

GET /sweeps/{id}/trials pages by ``after_id`` (``WHERE sweep_id = ? AND id > ? ORDER BY
id LIMIT n``). With only (sweep_id, status) to search by, SQLite sorted every trial of
the sweep for each page; this index hands the rows over in id order.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_trial_sweep_id", "trial", ["sweep_id", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_trial_sweep_id", table_name="trial")
