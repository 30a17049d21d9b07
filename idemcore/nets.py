"""The note's networks N1–N4 and B1–B4, custom layer lists, and initialization schemes."""

from __future__ import annotations

import itertools

import torch
from torch import nn

from idemcore.config import LayerSpec
from idemcore.errors import ConfigError


def _chain(sizes: list[int], bias: bool, activation: str) -> tuple[LayerSpec, ...]:
    return tuple(
        LayerSpec(a, b, bias=bias, activation=activation) for a, b in itertools.pairwise(sizes)
    )


# Exactly the note's two tables (§3): sizes, bias flags, Tanh placement.
ARCHITECTURES: dict[str, tuple[LayerSpec, ...]] = {
    "N1": _chain([5, 5], bias=False, activation="none"),
    "N2": _chain([5, 10, 5], bias=False, activation="none"),
    "N3": _chain([5, 10, 5], bias=True, activation="tanh"),
    "N4": _chain([784, 1024, 2048, 784], bias=True, activation="tanh"),
    "B1": _chain([5, 5], bias=True, activation="none"),
    "B2": _chain([100, 250, 250, 250, 250, 100], bias=True, activation="none"),
    "B3": _chain([4096, 1024, 4096], bias=True, activation="none"),
    "B4": _chain([784, 1024, 2048, 784], bias=True, activation="none"),
}


def resolve_layers(architecture: str | tuple[LayerSpec, ...]) -> tuple[LayerSpec, ...]:
    """The layer list of a named or custom architecture."""
    if isinstance(architecture, str):
        try:
            return ARCHITECTURES[architecture]
        except KeyError:
            raise ConfigError(
                f"architecture: unknown {architecture!r}; expected one of "
                f"{sorted(ARCHITECTURES)} or a list of layers"
            ) from None
    return architecture


def input_dim(architecture: str | tuple[LayerSpec, ...]) -> int:
    """The network's input (= output) dimension d."""
    return resolve_layers(architecture)[0].in_features


def is_activation_free(architecture: str | tuple[LayerSpec, ...]) -> bool:
    """True when the network is a composition of affine maps (eigen-analysis applies)."""
    return all(layer.activation == "none" for layer in resolve_layers(architecture))


def m1_applicable(architecture: str | tuple[LayerSpec, ...]) -> bool:
    """M1 needs exactly one bias-free square linear layer without activation."""
    layers = resolve_layers(architecture)
    return (
        len(layers) == 1
        and not layers[0].bias
        and layers[0].activation == "none"
        and layers[0].in_features == layers[0].out_features
    )


M1_RESTRICTION = (
    "m1 applies only to a single bias-free square linear layer (like N1), with no activation"
)


def check_architecture(architecture: str | tuple[LayerSpec, ...], algorithm: str) -> None:
    """Raise ConfigError when the layer list does not chain or cannot be idempotent."""
    layers = resolve_layers(architecture)
    if not layers:
        raise ConfigError("architecture: needs at least one layer")
    for i, (a, b) in enumerate(itertools.pairwise(layers)):
        if a.out_features != b.in_features:
            raise ConfigError(
                f"architecture: layer {i} outputs {a.out_features} features but layer "
                f"{i + 1} takes {b.in_features}"
            )
    if layers[0].in_features != layers[-1].out_features:
        raise ConfigError(
            f"architecture: input dimension {layers[0].in_features} must equal output "
            f"dimension {layers[-1].out_features} (n(n(x)) needs n: R^d -> R^d)"
        )
    if algorithm == "m1" and not m1_applicable(architecture):
        name = architecture if isinstance(architecture, str) else "the custom architecture"
        raise ConfigError(f"algorithm: m1 cannot train {name}: {M1_RESTRICTION}")


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
