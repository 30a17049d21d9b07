"""Alembic migrations of the store (applied by ``idem db upgrade``, never at import)."""
