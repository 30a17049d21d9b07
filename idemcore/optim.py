"""The optimizers a run can use, by name: how an update rule's gradient is applied.

``sgd`` is the note's (``torch.optim.SGD`` without momentum), ``momentum`` is SGD with
momentum 0.9, ``adam`` is ``torch.optim.Adam`` with PyTorch's defaults except the
learning rate. The names are declared once, in :data:`idemcore.config.OPTIMIZERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from idemcore.config import OPTIMIZERS
from idemcore.errors import ConfigError

# name -> (torch.optim class, keyword arguments besides lr)
OPTIMIZER_CLASSES: dict[str, tuple[Callable[..., torch.optim.Optimizer], dict[str, Any]]] = {
    "sgd": (torch.optim.SGD, {}),
    "momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "adam": (torch.optim.Adam, {}),
}


def make_optimizer(name: str, params: Iterable[Any], lr: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer ``name`` over ``params`` (tensors or param groups)."""
    try:
        cls, kwargs = OPTIMIZER_CLASSES[name]
    except KeyError:
        raise ConfigError(
            f"optimizer: unknown {name!r}; expected one of {list(OPTIMIZERS)}"
        ) from None
    return cls(params, lr=lr, **kwargs)
