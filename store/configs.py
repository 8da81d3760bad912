"""What every config dataclass shares: its fields' docstrings, and the refusal of non-finite numbers.

Configs and records document each field with the string literal right below it, as sparsify's ``simple_parsing``
reads them; the CLI's help and the evaluation record's JSON schema are generated from those docstrings. It lives
in ``store`` because every package depends on ``store``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import math
import re
import textwrap
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring, whitespace folded; fields without one are absent."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body  # type: ignore[attr-defined]
        for node, after in zip(body, [*body[1:], None], strict=True):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[node.target.id] = re.sub(r"\s+", " ", after.value.value).strip()
    return docs


def option_name(field_name: str) -> str:
    """How the command line spells a field by default."""
    return "--" + field_name.replace("_", "-")


def check_finite(cfg: Any, error: type[Exception]) -> None:
    """Refuse NaN and infinity in every float field (alone or in a tuple): NaN passes every ``<``/``>`` check a
    config makes, and would train to a NaN loss or hang a schedule, so it is caught before anything runs."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise error(f"{option_name(f.name)} must be a finite number, got {v}")
