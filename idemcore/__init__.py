"""idemcore: idempotent networks, ordinary/modified/M1 backprop, data, metrics, training.

Imports torch and numpy only (plus scikit-learn's bundled digits, loaded lazily). This
package module itself imports nothing, so ``idemcore.config`` (torch-free) stays cheap;
``idemcore.modified_loss`` and ``idemcore.idempotent_loss`` (the drop-in losses of
:mod:`idemcore.losses`) load torch on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"modified_loss", "idempotent_loss"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from idemcore import losses

        return getattr(losses, name)
    raise AttributeError(f"module 'idemcore' has no attribute {name!r}")
