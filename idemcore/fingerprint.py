"""The reuse key's view of the code: a fingerprint of idemcore's sources, automatically.

:func:`code_fingerprint` hashes idemcore's own source files (once per process), so the
reuse key (:meth:`idemcore.config.TrialConfig.config_hash`) changes with any change to
the code that computes results: no version number to forget to bump.
:func:`reuse_environment` is what the key adds to a config: that fingerprint and the
torch version (the device class, dtype and TF32 are config fields).

Standard library only (the torch version is read from the installed distribution), so
``idemcore.config`` stays importable without torch.
"""

from __future__ import annotations

import hashlib
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """sha256 over idemcore's ``*.py`` files (path relative to the package, then bytes,
    in sorted path order). Computed once per process; one changed byte changes it."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        digest.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=1)
def torch_version() -> str:
    """The torch version, without importing torch (the imported module's if loaded)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.__version__)
    return metadata.version("torch")


def reuse_environment() -> dict[str, str]:
    """What the reuse key covers besides the config: the code and the torch version."""
    return {"code_fingerprint": code_fingerprint(), "torch_version": torch_version()}
