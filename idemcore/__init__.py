"""idemcore: idempotent networks, ordinary/modified/M1 backprop, data, metrics, training.

Imports torch and numpy only (plus scikit-learn's bundled digits, loaded lazily).
"""

from __future__ import annotations

__version__ = "0.1.0"
