"""Architectures by variant name: a leaf that imports no architecture. Each architecture module defines its class and
the fields it takes (a small frozen dataclass); :mod:`fit.architectures` registers them, explicitly and in
``--variant``'s order, as SAELens's ``registry.py`` is filled by its package.

A variant (``SAEConfig.variant``, the CLI's ``--variant``) names one architecture class and its fields class: the
fields it takes, their defaults and their checks. :class:`fit.config.SAEConfig` refuses a field the variant does not
take and names runs after the fields that make a difference.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

ARCH_FIELDS = ("groups", "prefixes", "gamma", "l1", "k", "aux_alpha", "aux_k", "dead_tokens")
"""The SAEConfig fields that belong to some architectures and not others, in the order run names show them."""


@dataclass(frozen=True)
class Variant:
    name: str
    """The variant's name (``--variant``)."""
    cls: type
    """The architecture class: ``cls(fields, n_latents)`` is an :class:`fit.architectures.base.Architecture`."""
    fields: type
    """Its fields: a frozen dataclass whose init fields are the :data:`ARCH_FIELDS` it takes (with their defaults,
    checked in its ``__post_init__``); fields with ``init=False`` are the values it fixes (the baseline's one
    group)."""

    @property
    def uses(self) -> tuple[str, ...]:
        """The :data:`ARCH_FIELDS` this variant takes, in run-name order."""
        taken = {f.name for f in dataclasses.fields(self.fields) if f.init}
        return tuple(f for f in ARCH_FIELDS if f in taken)

    def defaults(self) -> dict[str, Any]:
        """Each field it takes, at its default."""
        made = self.fields()
        return {name: getattr(made, name) for name in self.uses}


_VARIANTS: dict[str, Variant] = {}


def register(name: str, cls: type, fields: type) -> None:
    """Make ``cls`` the architecture of variant ``name``, taking ``fields`` (a class may serve several variants,
    e.g. ``baseline`` and ``hier``, with different fields)."""
    if name in _VARIANTS:
        raise ValueError(f"variant {name!r} is registered twice")
    unknown = {f.name for f in dataclasses.fields(fields) if f.init} - set(ARCH_FIELDS)
    if unknown:
        raise ValueError(f"variant {name!r} takes unknown fields {sorted(unknown)}: add them to ARCH_FIELDS")
    _VARIANTS[name] = Variant(name, cls, fields)


def variants() -> tuple[str, ...]:
    """Every registered variant name, in registration order."""
    return tuple(_VARIANTS)


def variant(name: str) -> Variant:
    """The registered variant ``name`` (KeyError if there is none; SAEConfig validates names first)."""
    return _VARIANTS[name]


def architecture(name: str, fields: Any, n_latents: int) -> Any:
    """The architecture of variant ``name`` with these fields (an instance of its fields class) for an SAE of
    ``n_latents`` latents."""
    return _VARIANTS[name].cls(fields, n_latents)
