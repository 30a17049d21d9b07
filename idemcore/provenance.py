"""Which code, libraries and machine computed a result, and the numerics it ran with.

* :func:`apply_numerics` sets the float32 matmul precision a config asks for (TF32 off
  unless ``tf32=True``) before training.
* :class:`Provenance` records what a trial ran on: the code fingerprint
  (:func:`idemcore.fingerprint.code_fingerprint`), versions, device, host, Ray node, pack.

Standard library and torch only, like the rest of idemcore.
"""

from __future__ import annotations

import platform
import socket
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from idemcore.fingerprint import code_fingerprint

DISTRIBUTION = "idemsweep"


def apply_numerics(tf32: bool) -> None:
    """Set float32 matmul/cuDNN precision for this process: IEEE float32 unless ``tf32``.

    TF32 (Ampere and later GPUs) rounds float32 matmul inputs to a 10-bit mantissa, which
    changes results (by about 1e-3 relative) — so it is off unless a spec asks for it,
    and part of the reuse key when it does. Only torch's per-backend ``fp32_precision``
    API is used: torch refuses reads once the legacy ``allow_tf32`` flags are mixed in.
    No effect on CPU computations; the setting is still applied and recorded.
    """
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision  # type: ignore[attr-defined]
    torch.backends.cudnn.rnn.fp32_precision = precision  # type: ignore[attr-defined]


def tf32_enabled() -> bool:
    """Whether float32 CUDA matmuls may use TF32 in this process right now."""
    return bool(torch.backends.cuda.matmul.fp32_precision == "tf32")


def package_version() -> str | None:
    """The installed idemsweep distribution's version (None when not installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str | torch.device) -> str:
    """``"cpu: <model>"`` or ``"cuda: <GPU name>"``: the hardware that ran a trial."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"{dev.type}: {cpu_model()}"


@dataclass(frozen=True)
class Provenance:
    """Where and with what a trial's result was computed (stored on its trial row).

    ``pack_id`` is the store id of the first member of the trial's pack (None when the
    trial trained alone); ``ray_node_id`` is None outside Ray.
    """

    code_fingerprint: str
    idemsweep_version: str | None
    torch_version: str
    python_version: str
    device: str
    tf32: bool
    host: str
    ray_node_id: str | None
    packed: bool
    pack_id: int | None

    @classmethod
    def collect(
        cls,
        device: str | torch.device,
        *,
        ray_node_id: str | None = None,
        pack_id: int | None = None,
    ) -> Provenance:
        """The provenance of a trial about to run in this process on ``device``."""
        return cls(
            code_fingerprint=code_fingerprint(),
            idemsweep_version=package_version(),
            torch_version=torch.__version__,
            python_version=platform.python_version(),
            device=device_name(device),
            tf32=tf32_enabled(),
            host=socket.gethostname(),
            ray_node_id=ray_node_id,
            packed=pack_id is not None,
            pack_id=pack_id,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``Provenance(**p.to_dict()) == p``."""
        return asdict(self)


# The provenance field names, in order: the trial columns, schema fields and report read it.
PROVENANCE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Provenance))
