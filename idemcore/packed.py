"""Packing policy: which trials of a sweep train together, and how many at a time.

The note's networks are tiny (N1 is 5x5), so a sweep of hundreds of them spends its time
on per-trial overhead, not on arithmetic. Trials that agree on everything but ``seed``
and ``learning_rate`` (same :func:`pack_key`) are trained side by side by
:class:`idemcore.train.PackedTraining` (the one training loop; a run alone is a pack of
one); every member keeps exactly what it would have alone.

Public API (see docs/internals.md): :class:`PackedTraining`, :func:`pack_key`,
:func:`can_pack`, :func:`auto_pack_size`, :func:`group_configs`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

from idemcore.architectures import resolve_layers
from idemcore.config import TrialConfig
from idemcore.train import PackedTraining, pack_key

__all__ = [
    "PackedTraining",
    "auto_pack_size",
    "can_pack",
    "group_configs",
    "pack_key",
    "split_evenly",
]

# Networks above this many parameters (N4, B2, B3, B4) are trained alone: their
# matrix products already fill the machine, and a pack would multiply their memory.
MAX_PACKABLE_PARAMS = 20_000
# Widest layer a packed member may have (keeps image_dim on its exact branch, d <= 128).
MAX_PACKABLE_WIDTH = 128
# Beyond this many members a pack stops getting faster per member on a CPU.
MAX_AUTO_PACK = 32
# Share of the available memory a pack may plan to use.
MEMORY_FRACTION = 0.25

_DTYPE_BYTES = {"float32": 4, "float64": 8}
# Parameter-sized buffers each optimizer keeps per member (Adam: both moments).
OPTIMIZER_STATE = {"sgd": 0, "momentum": 1, "adam": 2}


def param_count(config: TrialConfig) -> int:
    """Number of trainable parameters of the config's network."""
    return sum(
        layer.in_features * layer.out_features + (layer.out_features if layer.bias else 0)
        for layer in resolve_layers(config.architecture)
    )


def can_pack(config: TrialConfig) -> bool:
    """True for small networks (N1-N3, B1, small custom ones); False for N4, B2-B4."""
    layers = resolve_layers(config.architecture)
    widest = max(max(layer.in_features, layer.out_features) for layer in layers)
    return param_count(config) <= MAX_PACKABLE_PARAMS and widest <= MAX_PACKABLE_WIDTH


def member_bytes(config: TrialConfig) -> int:
    """A generous estimate of one member's working memory in a pack (bytes)."""
    layers = resolve_layers(config.architecture)
    dim = layers[0].in_features
    width_sum = sum(layer.out_features for layer in layers)
    elems = (
        config.samples * dim  # the epoch's training data
        + config.batch_size * width_sum * 3 * 2  # three passes of activations, plus grads
        + config.eval_samples * width_sum * 2  # evaluation passes
        + config.eval_samples * dim
        + (config.samples * dim if config.data != "gaussian-fresh" else 0)  # fixed train set
        + 4 * param_count(config)  # params, grads, snapshot, update
        + OPTIMIZER_STATE[config.optimizer] * param_count(config)  # momentum/Adam buffers
    )
    return elems * _DTYPE_BYTES[config.dtype]


def available_memory(device: str | torch.device = "cpu") -> int:
    """Bytes available for a pack: free GPU memory, or the machine's available RAM."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def auto_pack_size(config: TrialConfig, available_bytes: int | None = None) -> int:
    """How many members to pack for ``config``: 1 for large nets, else as many as fit in
    a quarter of the available memory, at most MAX_AUTO_PACK."""
    if not can_pack(config):
        return 1
    if available_bytes is None:
        available_bytes = available_memory()
    fits = int(available_bytes * MEMORY_FRACTION) // max(1, member_bytes(config))
    return max(1, min(MAX_AUTO_PACK, fits))


def group_configs(
    configs: Sequence[TrialConfig], pack: int | bool | None = None
) -> list[list[int]]:
    """Indices of ``configs`` grouped by :func:`pack_key`, each key's members split
    evenly into packs of at most the pack size (:func:`split_evenly`).

    ``pack`` is the spec's override: ``False`` (or 1) trains every config alone, an
    integer caps the pack size, ``None`` or ``True`` picks :func:`auto_pack_size`.
    Configs that cannot be packed are singletons. Groups come in the order of their
    first member; within a key, members are ordered by seed (then by their order).
    """
    if pack is False:
        return [[i] for i in range(len(configs))]
    if not isinstance(pack, bool) and pack is not None and pack < 1:
        raise ValueError(f"pack: must be a positive integer, true or false, got {pack!r}")
    by_key: dict[tuple[Any, ...], list[int]] = {}
    order: list[tuple[str, Any]] = []
    for i, config in enumerate(configs):
        if not can_pack(config):
            order.append(("single", i))
            continue
        key = pack_key(config)
        if key not in by_key:
            by_key[key] = []
            order.append(("key", key))
        by_key[key].append(i)
    groups: list[list[int]] = []
    for kind, item in order:
        if kind == "single":
            groups.append([item])
            continue
        # By seed (stable), so one seed's learning rates share a pack and its fresh data
        # is drawn once for all of them (train.fresh_draw_groups).
        members = sorted(by_key[item], key=lambda i: configs[i].seed)
        if pack is None or isinstance(pack, bool):
            size = auto_pack_size(configs[members[0]])
        else:
            size = pack
        groups.extend(split_evenly(members, size))
    return groups


def split_evenly(members: list[int], size: int) -> list[list[int]]:
    """``members`` in as few packs of at most ``size`` as possible, their sizes differing
    by at most one (40 members at size 32: 20 + 20, not 32 + 8, so two concurrent packs
    finish together instead of one running alone at the end)."""
    count = -(-len(members) // size)
    small, extra = divmod(len(members), count)
    out: list[list[int]] = []
    start = 0
    for j in range(count):
        n = small + (1 if j < extra else 0)
        out.append(members[start : start + n])
        start += n
    return out
