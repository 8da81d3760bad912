"""Click options generated from the config dataclasses, so each default and help text lives once, in the config.

A field's option takes its default from the field, its help from the field's docstring (the string literal
under it, as sparsify's ``simple_parsing`` reads them) and its type from the annotation. :class:`Opt` only says
how the command line spells a field when it is not plain ``--field-name``: a short or legacy name, repeatable
(a grid axis), choices, or a flag that switches a default-true field off.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from store.configs import field_docs, option_name


def parse_storage_options(pairs: Sequence[str]) -> dict:
    """``KEY=VALUE`` pairs (VALUE parsed as JSON when it is JSON) -> fsspec storage options."""
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--storage-option")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


FIELD_DEFAULT: Any = type("FieldDefault", (), {"__repr__": lambda self: "FIELD_DEFAULT"})()
"""Marks :attr:`Opt.default` unset: the option takes the field's own default."""


@dataclass(frozen=True)
class Opt:
    """How the command line spells one config field, where it differs from ``--field-name``."""

    names: tuple[str, ...] = ()
    """Option names, e.g. ``("-K", "--groups")``; empty: ``--field-name``."""
    multiple: bool = False
    """Repeatable: the command receives a tuple (the default is the field's default, alone)."""
    choices: Sequence[str] | None = None
    """Allowed values (the config module's tuple of them)."""
    switch_off: bool = False
    """A boolean given as a flag that sets it false, under a name of its own (``--no-verify-checksums``); a
    default-true field without one is switched off by ``--no-field-name``."""
    default: Any = FIELD_DEFAULT
    """A command-line default other than the field's (only where the CLI resolves it later, e.g. from torchrun)."""
    help: str | None = None
    """Help text other than the field's docstring (only where the command line's meaning differs)."""
    metavar: str | None = None


STORAGE_OPTION = Opt(names=("--storage-option",), multiple=True, metavar="KEY=VALUE",
                     help="fsspec option for a remote store (repeatable), e.g. "
                          "client_kwargs='{\"endpoint_url\": \"http://...\"}'.")


def help_text(cls: type) -> dict[str, str]:
    """Each field's docstring as terminal help: reST literals (``x``) read plainly."""
    return {name: re.sub(r"``([^`]+)``", r"\1", doc) for name, doc in field_docs(cls).items()}


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; other annotations unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _click_kwargs(f: dataclasses.Field, annotation: Any, doc: str, opt: Opt) -> dict[str, Any]:
    base = _base_type(annotation)
    default = opt.default
    if default is FIELD_DEFAULT:
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
    kw: dict[str, Any] = {"help": opt.help if opt.help is not None else doc, "show_default": True}
    if opt.metavar:
        kw["metavar"] = opt.metavar
    if base is bool and not opt.multiple:
        kw.update(is_flag=True, default=False, show_default=False)
        if opt.switch_off or default is True:
            kw.update(flag_value=False, default=True)
            if opt.help is None:
                kw["help"] = f"Turn off (on by default): {doc}"
        return kw
    if isinstance(default, dict):  # fsspec storage options: repeatable KEY=VALUE pairs
        return {**kw, "multiple": True, "default": (), "show_default": False}
    variadic = typing.get_origin(base) is tuple and typing.get_args(base)[-1] is Ellipsis
    if variadic:  # tuple[int, ...]: a repeatable option whose values make the tuple (``--layer 6 --layer 12``)
        kw.update(type=typing.get_args(base)[0], multiple=True)
    elif typing.get_origin(base) is tuple:
        kw.update(type=typing.get_args(base)[0], nargs=len(typing.get_args(base)))
    elif opt.choices is not None:
        kw["type"] = click.Choice(list(opt.choices))
    elif base in (int, float, str):
        kw["type"] = base
    if default is dataclasses.MISSING:
        kw.update(required=True, show_default=False)
    elif default is None and (variadic or opt.multiple):  # none given: the config's own (e.g. the variant's) default
        kw.update(default=[], show_default=False, multiple=True)
    elif variadic:
        kw["default"] = list(default)
    elif opt.multiple:
        kw.update(multiple=True, default=[default])
    else:
        kw["default"] = default
        kw["show_default"] = default is not None
    return kw


def config_options(cls: type, *, only: Sequence[str] | None = None, exclude: Sequence[str] = (),
                   opts: dict[str, Opt] | None = None) -> Callable[[Callable], Callable]:
    """A decorator adding one click option per field of ``cls`` (in field order); the command receives them as
    keyword arguments named like the fields."""
    opts = opts or {}
    hints = typing.get_type_hints(cls)
    docs = help_text(cls)
    fields = [f for f in dataclasses.fields(cls)
              if (only is None or f.name in only) and f.name not in exclude]

    def decorate(command: Callable) -> Callable:
        for f in reversed(fields):  # click applies decorators bottom-up
            opt = opts.get(f.name, STORAGE_OPTION if f.name == "storage_options" else Opt())
            flag = option_name(f.name)
            names = opt.names or ((flag.replace("--", "--no-", 1),) if f.default is True else (flag,))
            kw = _click_kwargs(f, hints[f.name], docs.get(f.name, ""), opt)
            command = click.option(*names, f.name, **kw)(command)
        return command

    return decorate


def config_kwargs(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The command's keyword arguments that are fields of ``cls``, storage options parsed; taken out of
    ``values`` so what is left belongs to other configs."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {k: values.pop(k) for k in list(values) if k in fields}
    for name, value in out.items():
        if fields[name].default_factory is dict:
            out[name] = parse_storage_options(value)
    return out


storage_option = click.option("--storage-option", "storage_options", multiple=True, metavar=STORAGE_OPTION.metavar,
                              help=STORAGE_OPTION.help)
"""For commands without a config dataclass (``store info|verify|finalize``)."""


def given_on_command_line() -> set[str]:
    """The options the user typed, by field name (a preset never overrides them; an option that applies to nothing
    the command does is refused)."""
    ctx = click.get_current_context()
    return {name for name in ctx.params
            if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE}
