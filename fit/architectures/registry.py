"""Architectures by variant name: ``@register("topk", uses=(...))`` on a class is all a new one needs.

A variant (``SAEConfig.variant``, the CLI's ``--variant``) names one architecture class and the SAEConfig fields it
uses; :class:`fit.config.SAEConfig` normalises the fields a variant does not use (so a grid over them does not train
the same SAE twice) and names runs after the fields it does use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fit.architectures.base import Architecture
    from fit.config import SAEConfig

ARCH_FIELDS = ("groups", "prefixes", "gamma", "l1", "k", "aux_alpha", "aux_k", "dead_tokens")
"""The SAEConfig fields that belong to some architectures and not others, in the order run names show them."""


@dataclass(frozen=True)
class Variant:
    name: str
    """The variant's name (``--variant``)."""
    cls: type
    """The architecture class: ``cls(cfg, n_latents)`` is an :class:`Architecture`."""
    uses: tuple[str, ...]
    """The fields of :data:`ARCH_FIELDS` it reads (the others are normalised away)."""


_VARIANTS: dict[str, Variant] = {}


def register(name: str, *, uses: tuple[str, ...]) -> Callable[[type], type]:
    """Class decorator: the class is the architecture of variant ``name``, which reads the SAEConfig fields ``uses``
    (a class may serve several variants, e.g. ``baseline`` and ``hier``)."""
    unknown = set(uses) - set(ARCH_FIELDS)
    if unknown:
        raise ValueError(f"variant {name!r} uses unknown fields {sorted(unknown)}: add them to ARCH_FIELDS")

    def add(cls: type) -> type:
        if name in _VARIANTS:
            raise ValueError(f"variant {name!r} is registered twice")
        _VARIANTS[name] = Variant(name, cls, tuple(f for f in ARCH_FIELDS if f in uses))
        return cls

    return add


def variants() -> tuple[str, ...]:
    """Every registered variant name, in registration order."""
    return tuple(_VARIANTS)


def variant(name: str) -> Variant:
    """The registered variant ``name`` (KeyError if there is none; SAEConfig validates names first)."""
    return _VARIANTS[name]


def architecture(cfg: SAEConfig, n_latents: int) -> Architecture:
    """The architecture of ``cfg``'s variant for an SAE of ``n_latents`` latents."""
    return _VARIANTS[cfg.variant].cls(cfg, n_latents)
