"""SAE architectures, registered by variant name (:mod:`fit.architectures.registry`).

One small module per architecture: :mod:`.relu_l1` (``baseline``, ``hier``), :mod:`.topk` (``topk``, and the part
every TopK-family SAE shares, AuxK included), :mod:`.batchtopk` (``batchtopk``), :mod:`.matryoshka` (``matryoshka``,
``hier-matryoshka``); :mod:`.base` says what an architecture provides. Each module defines its class and its fields
(a frozen dataclass: the config fields it takes, their defaults and checks) and imports neither the registry nor
the configs; adding one is that module and one ``register`` line below.
"""

from fit.architectures.base import Architecture, Batch, Buffers, Output
from fit.architectures.batchtopk import BatchTopK
from fit.architectures.matryoshka import HierMatryoshka, HierMatryoshkaFields, Matryoshka, MatryoshkaFields
from fit.architectures.registry import ARCH_FIELDS, Variant, architecture, register, variant, variants
from fit.architectures.relu_l1 import BaselineFields, HierFields, ReLUL1
from fit.architectures.topk import TopK, TopKFields

# In --variant's order (the paper's two first).
register("baseline", ReLUL1, BaselineFields)
register("hier", ReLUL1, HierFields)
register("topk", TopK, TopKFields)
register("batchtopk", BatchTopK, TopKFields)
register("matryoshka", Matryoshka, MatryoshkaFields)
register("hier-matryoshka", HierMatryoshka, HierMatryoshkaFields)

__all__ = ["ARCH_FIELDS", "Architecture", "Batch", "Buffers", "Output", "Variant", "architecture", "register",
           "variant", "variants"]
