"""The networks as torch modules (from idemcore.architectures' specs) and their inits."""

from __future__ import annotations

import torch
from torch import nn

from idemcore.architectures import LayerSpec, resolve_layers
from idemcore.errors import ConfigError


def build_net(
    architecture: str | tuple[LayerSpec, ...],
    *,
    seed: int,
    init: str = "default",
    gain: float = 1.0,
    init_std: float = 0.1,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """Build the network with weights drawn from ``seed`` (global RNG state untouched).

    ``default`` is PyTorch's own Linear init (the note's); ``orthogonal`` and ``normal``
    replace the weight matrices (biases keep PyTorch's init); ``gain`` scales the weights
    of any scheme.
    """
    layers = resolve_layers(architecture)
    modules: list[nn.Module] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for spec in layers:
            linear = nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
            with torch.no_grad():
                if init == "orthogonal":
                    nn.init.orthogonal_(linear.weight)
                elif init == "normal":
                    nn.init.normal_(linear.weight, mean=0.0, std=init_std)
                elif init != "default":
                    raise ConfigError(f"init: unknown {init!r}")
                if gain != 1.0:
                    linear.weight.mul_(gain)
            modules.append(linear)
            if spec.activation == "tanh":
                modules.append(nn.Tanh())
    return nn.Sequential(*modules).to(dtype)


def linear_layers(net: nn.Module) -> list[nn.Linear]:
    """The Linear modules of ``net`` in order."""
    return [m for m in net.modules() if isinstance(m, nn.Linear)]
