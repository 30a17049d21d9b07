"""result views: trial_result and epoch_result for analysts

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 09:30:00

Two read-only views over the tables (docs/sql.md):

- ``trial_result``: one row per trial with its sweep's id and name, every config
  column (plus epochs and threshold from the stored config), status, final metrics,
  the solution kind (service/report/kinds.py's ``classify``; a test holds the two
  equal), reused_from resolved (``source_trial_id``, ``source_sweep_id``) and the
  provenance columns.
- ``epoch_result``: every epoch row with its trial's sweep and config columns; a reused
  trial shows the rows of the run it took over, under its own trial id.

Views are not ORM tables, so ``compare_metadata`` never sees them. A later migration that
rebuilds ``trial``, ``epoch_metric`` or ``sweep`` (SQLite batch mode) or drops a column the
views read must drop both views first and create them again afterwards.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The input dimension d of each named architecture (idemcore.nets.ARCHITECTURES, frozen
# here as this migration's history; tests/service/store/test_views.py checks them).
NAMED_DIMS = {"N1": 5, "N2": 5, "N3": 5, "N4": 784, "B1": 5, "B2": 100, "B3": 4096, "B4": 784}
DIM_TOLERANCE = 0.5  # service/report/kinds.py

CONFIG_COLUMNS = (
    "architecture",
    "algorithm",
    "learning_rate",
    "samples",
    "batch_size",
    "seed",
    "data",
    "init",
    "optimizer",
)
FINAL_COLUMNS = (
    "idempotent_error",
    "train_idempotent_error",
    "loss",
    "norm",
    "trace",
    "update_norm",
    "image_dim",
    "epochs_to_threshold",
    "epochs_run",
    "wall_seconds",
)
PROVENANCE_COLUMNS = (
    "code_fingerprint",
    "idemsweep_version",
    "torch_version",
    "python_version",
    "device",
    "tf32",
    "host",
    "ray_node_id",
    "packed",
    "pack_id",
)
EPOCH_COLUMNS = (
    "idempotent_error",
    "train_idempotent_error",
    "loss",
    "norm",
    "trace",
    "update_norm",
    "image_dim",
    "seconds",
)


def _json(dialect: str, path: Sequence[str | int], cast: str) -> str:
    """A value from trial.config (JSONB on PostgreSQL, JSON text on SQLite)."""
    if dialect == "postgresql":
        steps = "".join(f"->{p}" if isinstance(p, int) else f"->'{p}'" for p in path[:-1])
        last = path[-1]
        leaf = f"->>{last}" if isinstance(last, int) else f"->>'{last}'"
        return f"(t.config{steps}{leaf})::{cast}"
    dotted = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return f"CAST(json_extract(t.config, '${dotted}') AS {cast})"


def _trial_result(dialect: str) -> str:
    real = "double precision" if dialect == "postgresql" else "REAL"
    threshold = _json(dialect, ["threshold"], real)
    named = " ".join(f"WHEN '{name}' THEN {d}" for name, d in NAMED_DIMS.items())
    dim = (
        f"COALESCE(CASE t.architecture {named} END, "
        f"{_json(dialect, ['architecture', 0, 'in_features'], 'integer')})"
    )
    kind = f"""CASE
        WHEN t.status = 'diverged' THEN 'diverged'
        WHEN t.status <> 'succeeded' OR t.image_dim IS NULL THEN 'unfinished'
        WHEN t.idempotent_error IS NULL OR t.idempotent_error >= {threshold}
            THEN 'not idempotent'
        WHEN t.image_dim <= {DIM_TOLERANCE} THEN 'null map'
        WHEN t.image_dim >= {dim} - {DIM_TOLERANCE} THEN 'identity'
        ELSE 'projection'
    END"""
    columns = ",\n    ".join(
        [
            "t.sweep_id",
            "s.name AS sweep_name",
            "t.id AS trial_id",
            "t.status",
            *[f"t.{c}" for c in CONFIG_COLUMNS],
            f"{_json(dialect, ['epochs'], 'integer')} AS epochs",
            f"{threshold} AS threshold",
            *[f"t.{c}" for c in FINAL_COLUMNS],
            f"{kind} AS solution_kind",
            "t.reused_from",
            "COALESCE(t.reused_from, t.id) AS source_trial_id",
            "COALESCE(src.sweep_id, t.sweep_id) AS source_sweep_id",
            "t.attempts",
            "t.started_at",
            "t.finished_at",
            *[f"t.{c}" for c in PROVENANCE_COLUMNS],
        ]
    )
    return f"""CREATE VIEW trial_result AS
SELECT
    {columns}
FROM trial AS t
JOIN sweep AS s ON s.id = t.sweep_id
LEFT JOIN trial AS src ON src.id = t.reused_from"""


def _epoch_result() -> str:
    columns = ",\n    ".join(
        [
            "t.sweep_id",
            "s.name AS sweep_name",
            "t.id AS trial_id",
            "t.status",
            *[f"t.{c}" for c in CONFIG_COLUMNS],
            "e.epoch",
            *[f"e.{c}" for c in EPOCH_COLUMNS],
        ]
    )
    return f"""CREATE VIEW epoch_result AS
SELECT
    {columns}
FROM trial AS t
JOIN sweep AS s ON s.id = t.sweep_id
JOIN epoch_metric AS e ON e.trial_id = COALESCE(t.reused_from, t.id)"""


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(_trial_result(dialect))
    op.execute(_epoch_result())


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS epoch_result")
    op.execute("DROP VIEW IF EXISTS trial_result")
