"""The code fingerprint, the reuse key's environment, TF32 numerics and Provenance."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from idemcore import provenance
from idemcore.provenance import (
    PROVENANCE_FIELDS,
    Provenance,
    apply_numerics,
    code_fingerprint,
    tf32_enabled,
)
from tests.utils.factories import make_config

PROBE = (
    "import json; import idemcore.provenance as p; from idemcore.config import TrialConfig; "
    "c = TrialConfig(architecture='N1', algorithm='modified', learning_rate=0.1, "
    "samples=10, batch_size=10, epochs=1, seed=0); "
    "print(json.dumps([str(p.PACKAGE_DIR), p.code_fingerprint(), c.config_hash()]))"
)


def probe(root: Path) -> tuple[str, str, str]:
    """(package dir, fingerprint, a config's key) as seen by a process importing
    idemcore from ``root`` (first on PYTHONPATH, ahead of the editable install)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env,
        cwd=root,  # not the repository root: its idemcore would come first on sys.path
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    package, fingerprint, key = json.loads(out.strip().splitlines()[-1])
    return package, fingerprint, key


def copy_idemcore(dest: Path) -> Path:
    """A copy of the idemcore package under ``dest`` (without bytecode caches)."""
    shutil.copytree(
        provenance.PACKAGE_DIR, dest / "idemcore", ignore=shutil.ignore_patterns("__pycache__")
    )
    return dest / "idemcore"


@pytest.mark.slow
def test_one_changed_byte_in_idemcore_changes_the_fingerprint_and_the_key(
    tmp_path: Path,
) -> None:
    same = copy_idemcore(tmp_path / "same")
    changed = copy_idemcore(tmp_path / "changed")
    source = changed / "metrics.py"
    data = bytearray(source.read_bytes())
    data[-2] = ord(" ") if data[-2] != ord(" ") else ord("\t")  # one byte, still valid Python
    source.write_bytes(bytes(data))

    pkg_same, fp_same, key_same = probe(same.parent)
    pkg_changed, fp_changed, key_changed = probe(changed.parent)
    assert (pkg_same, pkg_changed) == (str(same), str(changed))  # the copies were imported
    assert fp_same == code_fingerprint()  # the fingerprint does not depend on the location
    assert (
        key_same
        == make_config(learning_rate=0.1, samples=10, batch_size=10, epochs=1).config_hash()
    )
    assert fp_changed != fp_same and key_changed != key_same


def test_fingerprint_is_computed_once_per_process() -> None:
    first = code_fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0
    assert code_fingerprint() is first  # cached: no second pass over the files


@pytest.mark.parametrize(
    "change",
    [{"device": "cuda"}, {"tf32": True}, {"dtype": "float64"}, {"optimizer": "adam"}],
)
def test_device_class_dtype_and_tf32_are_part_of_the_key(change: dict[str, object]) -> None:
    assert make_config(**change).config_hash() != make_config().config_hash()


def test_key_covers_the_torch_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = make_config().config_hash()
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert make_config().config_hash() != before


def test_tf32_is_applied_explicitly_and_recorded() -> None:
    try:
        apply_numerics(True)
        assert tf32_enabled()
        assert Provenance.collect("cpu").tf32 is True
        apply_numerics(False)
        assert not tf32_enabled()
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert Provenance.collect("cpu").tf32 is False
    finally:
        apply_numerics(False)


def test_provenance_records_code_versions_machine_and_pack() -> None:
    alone = Provenance.collect("cpu")
    assert alone.code_fingerprint == code_fingerprint()
    assert alone.torch_version == torch.__version__
    assert alone.python_version == platform.python_version()
    assert alone.device.startswith("cpu: ") and len(alone.device) > len("cpu: ")
    assert alone.host and alone.ray_node_id is None
    assert (alone.packed, alone.pack_id) == (False, None)
    packed = Provenance.collect("cpu", ray_node_id="abc", pack_id=7)
    assert (packed.packed, packed.pack_id, packed.ray_node_id) == (True, 7, "abc")
    assert Provenance(**packed.to_dict()) == packed
    assert json.loads(json.dumps(packed.to_dict())) == packed.to_dict()
    assert tuple(f.name for f in fields(Provenance)) == PROVENANCE_FIELDS
