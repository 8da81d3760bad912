"""SAE architectures, registered by variant name (:mod:`fit.architectures.registry`).

One small module per architecture: :mod:`.relu_l1` (``baseline``, ``hier``), :mod:`.topk` (``topk``, and the part
every TopK-family SAE shares, AuxK included), :mod:`.batchtopk` (``batchtopk``), :mod:`.matryoshka` (``matryoshka``,
``hier-matryoshka``); :mod:`.base` says what an architecture provides. Adding one is one module with a
``@register`` class, imported below.
"""

# isort: off
# Each registers its variants; in this order, which is --variant's (the paper's two first).
from fit.architectures import relu_l1, topk, batchtopk, matryoshka  # noqa: F401
# isort: on
from fit.architectures.base import Architecture, Batch, Buffers, Output
from fit.architectures.registry import ARCH_FIELDS, architecture, register, variant, variants

__all__ = ["ARCH_FIELDS", "Architecture", "Batch", "Buffers", "Output", "architecture", "register", "variant",
           "variants"]
