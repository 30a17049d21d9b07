"""The code fingerprint, the reuse key's environment, TF32 numerics and Provenance."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from idemcore import fingerprint
from idemcore.fingerprint import code_fingerprint
from idemcore.provenance import PROVENANCE_FIELDS, Provenance, apply_numerics, tf32_enabled
from tests.utils.factories import make_config
from tests.utils.idemcore_copy import copy_idemcore, env_importing

PROBE = (
    "import json; import idemcore.fingerprint as p; from idemcore.config import TrialConfig; "
    "c = TrialConfig(architecture='N1', algorithm='modified', learning_rate=0.1, "
    "samples=10, batch_size=10, epochs=1, seed=0); "
    "print(json.dumps([str(p.PACKAGE_DIR), p.code_fingerprint(), c.config_hash()]))"
)


def probe(root: Path) -> tuple[str, str, str]:
    """(package dir, fingerprint, a config's key) as seen by a process importing
    idemcore from ``root``."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=env_importing(root),
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    package, fingerprint, key = json.loads(out.strip().splitlines()[-1])
    return package, fingerprint, key


@pytest.mark.slow
def test_one_changed_byte_in_idemcore_changes_the_fingerprint_and_the_key(
    tmp_path: Path,
) -> None:
    same = copy_idemcore(tmp_path / "same")
    changed = copy_idemcore(tmp_path / "changed", change_one_byte=True)

    pkg_same, fp_same, key_same = probe(same)
    pkg_changed, fp_changed, key_changed = probe(changed)
    assert (pkg_same, pkg_changed) == (str(same / "idemcore"), str(changed / "idemcore"))
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
    assert fingerprint.torch_version() == torch.__version__
    before = make_config().config_hash()
    monkeypatch.setattr(fingerprint, "torch_version", lambda: "0.0.0-other")
    assert make_config().config_hash() != before


def test_the_reuse_environment_needs_no_torch_import() -> None:
    code = (
        "import sys; from idemcore.fingerprint import reuse_environment; "
        "env = reuse_environment(); assert 'torch' not in sys.modules, 'torch imported'; "
        "print(env['torch_version'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == torch.__version__


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
