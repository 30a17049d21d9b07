"""A temporary copy of the idemcore package, optionally with one byte changed, and the
environment that makes a subprocess import it instead of the installed one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from idemcore.fingerprint import PACKAGE_DIR


def copy_idemcore(dest: Path, *, change_one_byte: bool = False) -> Path:
    """Copy idemcore to ``dest/idemcore`` (no bytecode); returns ``dest`` (the root to put
    first on PYTHONPATH). With ``change_one_byte``, the second-to-last byte of
    ``metrics.py`` (whitespace or a comment's end: still valid Python) is replaced."""
    shutil.copytree(PACKAGE_DIR, dest / "idemcore", ignore=shutil.ignore_patterns("__pycache__"))
    if change_one_byte:
        source = dest / "idemcore" / "metrics.py"
        data = bytearray(source.read_bytes())
        data[-2] = ord(" ") if data[-2] != ord(" ") else ord("\t")
        source.write_bytes(bytes(data))
    return dest


def env_importing(root: Path) -> dict[str, str]:
    """os.environ with ``root`` first on PYTHONPATH (ahead of the editable install).
    Run the subprocess with ``cwd=root`` too: the repository root would come first."""
    return {**os.environ, "PYTHONPATH": str(root)}
