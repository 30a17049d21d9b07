"""The note's networks N1-N4 and B1-B4 and custom layer lists, as plain data.

Torch-free, so that a config can be validated (and the store can read one) without
importing PyTorch; :mod:`idemcore.nets` builds the modules from these specs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from idemcore.errors import ConfigError

ACTIVATIONS = ("none", "tanh")


@dataclass(frozen=True)
class LayerSpec:
    """One fully connected layer: ``Linear(in_features, out_features, bias)`` + activation."""

    in_features: int
    out_features: int
    bias: bool = True
    activation: str = "none"

    def __post_init__(self) -> None:
        if self.in_features < 1 or self.out_features < 1:
            raise ConfigError("layer sizes must be positive integers")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"unknown activation {self.activation!r}; expected one of {list(ACTIVATIONS)}"
            )


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
    """M1 needs exactly one square linear layer without activation (N1, B1).

    A bias is allowed and stays frozen at its initial value: the note's M1 "does not
    modify biases" (§1.2), it updates the weight matrix only."""
    layers = resolve_layers(architecture)
    return (
        len(layers) == 1
        and layers[0].activation == "none"
        and layers[0].in_features == layers[0].out_features
    )


M1_RESTRICTION = (
    "m1 applies only to a single square linear layer with no activation (like N1 or B1; "
    "a bias stays frozen)"
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
