"""The optimizers a run can use, by name: how an update rule's gradient is applied.

``sgd`` is the note's (``torch.optim.SGD`` without momentum), ``momentum`` is SGD with
momentum 0.9, ``adam`` is ``torch.optim.Adam`` with PyTorch's defaults except the
learning rate. The names are declared once, in :data:`idemcore.config.OPTIMIZERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from idemcore.config import OPTIMIZERS
from idemcore.errors import ConfigError


@dataclass(frozen=True)
class OptimizerKind:
    """A torch.optim class with its settings besides the learning rate.

    ``linear`` says the update is linear in the gradient (SGD, with or without
    momentum): scaling the gradient by c scales every update by c. ``plain`` marks plain
    SGD, p <- p - lr * g, which keeps no state."""

    cls: Callable[..., torch.optim.Optimizer]
    kwargs: dict[str, Any] = field(default_factory=dict)
    linear: bool = False
    plain: bool = False


OPTIMIZER_KINDS: dict[str, OptimizerKind] = {
    "sgd": OptimizerKind(torch.optim.SGD, linear=True, plain=True),
    "momentum": OptimizerKind(torch.optim.SGD, {"momentum": 0.9}, linear=True),
    "adam": OptimizerKind(torch.optim.Adam),
}


def optimizer_kind(name: str) -> OptimizerKind:
    """The kind for a config's ``optimizer`` field."""
    try:
        return OPTIMIZER_KINDS[name]
    except KeyError:
        raise ConfigError(
            f"optimizer: unknown {name!r}; expected one of {list(OPTIMIZERS)}"
        ) from None


def make_optimizer(name: str, params: Iterable[Any], lr: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer ``name`` over ``params`` (tensors or param groups)."""
    kind = optimizer_kind(name)
    return kind.cls(params, lr=lr, **kind.kwargs)


class StackedOptimizer:
    """A torch.optim optimizer over P members' stacked parameters (member index first),
    each member with its own learning rate and its own optimizer state.

    For an optimizer linear in the gradient (SGD, momentum), each member's learning
    rate is folded into its gradient (g_i · lr_i) and the torch optimizer runs with
    lr = 1 over the stacked tensors: the momentum buffer then holds lr_i times the
    buffer of a run alone, and every update is the member's own (equal in exact
    arithmetic; float64 within 1e-12). Adam normalizes the gradient, so there each
    member's slices are a param group of their own with its learning rate. Either way
    a pack of one is exactly the torch optimizer of a run alone; tests compare every
    optimizer against a plain torch loop.

    Fast path: plain SGD (the default, and the note's) is applied directly,
    p <- p - (lr_i · g), the update torch.optim.SGD makes, without its per-step
    bookkeeping (measured ~0.3 ms a step on the loaded 2-core box: 10% of a packed N1
    epoch at m = 2000). tests/idemcore/test_optim.py holds it equal to torch.optim.SGD.
    """

    def __init__(self, name: str, params: Sequence[torch.Tensor], lrs: Sequence[float]) -> None:
        self.kind = optimizer_kind(name)
        self.params = list(params)
        first = self.params[0]
        if self.kind.linear:
            self.lr = torch.tensor(lrs, dtype=first.dtype, device=first.device)
            self.optimizer = self.kind.cls(self.params, lr=1.0, **self.kind.kwargs)
            self.views: list[list[torch.Tensor]] = []
        else:
            # Views share storage with the stacked tensors: updating a view updates them.
            self.views = [[p[i] for p in self.params] for i in range(len(lrs))]
            groups = [{"params": v, "lr": lr} for v, lr in zip(self.views, lrs, strict=True)]
            self.optimizer = self.kind.cls(groups, lr=lrs[0], **self.kind.kwargs)

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor | None]) -> None:
        """Apply one step of ``grads`` (stacked, in the params' order; None: skip).
        The gradient tensors may be overwritten."""
        if self.kind.linear:
            for p, g in zip(self.params, grads, strict=True):
                scaled = None if g is None else g.mul_(self.lr.view(-1, *[1] * (g.dim() - 1)))
                if self.kind.plain:
                    if scaled is not None:
                        p.sub_(scaled)
                else:
                    p.grad = scaled
            if self.kind.plain:
                return
        else:
            for i, views in enumerate(self.views):
                for v, g in zip(views, grads, strict=True):
                    v.grad = None if g is None else g[i]
        self.optimizer.step()

    def freeze(self, i: int) -> None:
        """Stop updating member ``i`` (after it diverged): zero lr and state."""
        if self.kind.linear:
            self.lr[i] = 0
            for p in self.params:
                buf = self.optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf[i].zero_()
        else:
            views = self.views[i]
            self.optimizer.param_groups = [
                g for g in self.optimizer.param_groups if g["params"] is not views
            ]
            for v in views:
                self.optimizer.state.pop(v, None)
