"""Reading a dataclass field's docstring (the string literal right below it), as sparsify's ``simple_parsing`` does.

Configs and records document each field that way; the CLI's help and the evaluation record's JSON schema are
generated from those docstrings. It lives in ``store`` because every package depends on ``store``.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import re
import textwrap


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
