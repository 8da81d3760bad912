"""The command line is generated from the config dataclasses: defaults and help live once, in the configs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import click
import pytest
from click.testing import CliRunner

from fit.architectures import ARCH_FIELDS, variant, variants
from fit.config import SAEConfig, TrainConfig
from harvest.config import HarvestConfig
from pipeline.browse.config import BrowseConfig
from pipeline.cli import cli
from pipeline.cli.options import Opt, config_kwargs, config_options, help_text


@dataclass(frozen=True)
class Example:
    path: str
    """Where it goes."""
    steps: int = 3
    """How many
    steps (folded onto one line)."""
    rate: float | None = None
    """A ``rate``, unset by default."""
    check: bool = True
    """Check things."""
    pair: tuple[float, float] = (0.5, 0.25)
    """Two numbers."""
    mode: str = "a"
    """One of a, b."""
    extra: dict = field(default_factory=dict)
    """fsspec options."""


def _parse(args: list[str], **opts: Opt) -> dict:
    seen: dict = {}

    @click.command()
    @config_options(Example, opts=opts)
    def command(**values):
        seen.update(values)

    result = CliRunner().invoke(command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return seen


def test_help_is_the_string_under_each_field():
    docs = help_text(Example)
    assert docs["steps"] == "How many steps (folded onto one line)."
    assert docs["rate"] == "A rate, unset by default."  # reST literals read plainly in a terminal
    assert set(docs) == {f.name for f in dataclasses.fields(Example)}


def test_options_take_the_fields_defaults_types_and_spellings():
    values = _parse(["--path", "p"])
    assert values == {"path": "p", "steps": 3, "rate": None, "check": True, "pair": (0.5, 0.25), "mode": "a",
                      "extra": ()}
    values = _parse(["--path", "p", "-n", "5", "-n", "6", "--rate", "0.1", "--no-check", "--pair", "1", "2",
                     "--mode", "b", "--extra", "key=1"],
                    steps=Opt(names=("-n",), multiple=True), mode=Opt(choices=("a", "b")))
    assert values["steps"] == (5, 6) and values["rate"] == 0.1 and values["check"] is False
    assert values["pair"] == (1.0, 2.0) and values["mode"] == "b"
    kwargs = config_kwargs(Example, dict(values))
    assert kwargs["extra"] == {"key": 1}  # KEY=VALUE pairs, VALUE parsed as JSON


def test_a_switch_off_flag_keeps_the_fields_true_default():
    skip = Opt(names=("--skip-check",), switch_off=True)
    assert _parse(["--path", "p"], check=skip)["check"] is True
    assert _parse(["--path", "p", "--skip-check"], check=skip)["check"] is False


def test_choices_and_required_fields_are_enforced():
    @click.command()
    @config_options(Example, opts={"mode": Opt(choices=("a", "b"))})
    def command(**values):
        pass

    assert "Missing option '--path'" in CliRunner().invoke(command, []).output
    assert "'c' is not one of 'a', 'b'" in CliRunner().invoke(command, ["--path", "p", "--mode", "c"]).output


def _options(command: click.Command) -> dict[str, click.Option]:
    return {p.name: p for p in command.params if isinstance(p, click.Option) and p.name != "help"}


@pytest.mark.parametrize(("command", "configs"), [
    ("fit", (TrainConfig, SAEConfig)),
    ("experiment", (TrainConfig, SAEConfig)),
    ("harvest", (HarvestConfig,)),
    ("browse", (BrowseConfig,)),
])
def test_every_generated_option_has_the_configs_help_and_default(command, configs):
    options = _options(cli.get_command(None, command))
    for cfg in configs:
        docs = help_text(cfg)
        for f in dataclasses.fields(cfg):
            if f.name not in options:
                continue
            opt = options[f.name]
            assert opt.help, f"{command} --{f.name} has no help: give {cfg.__name__}.{f.name} a docstring"
            if f.default is not dataclasses.MISSING and opt.default is not None and not opt.is_flag:
                # A repeatable scalar field (a grid axis) defaults to its value alone; a tuple field is its own list;
                # an architecture field none at all (each variant's default is its own).
                want = [] if f.default is None else [f.default] if opt.multiple and not isinstance(
                    f.default, tuple) else f.default
                assert tuple(opt.default) == tuple(want) if isinstance(want, tuple | list) else opt.default == want, \
                    (command, f.name)
            if cfg is SAEConfig and f.name in ARCH_FIELDS:  # its docstring, then each variant's default
                defaults = {repr(variant(v).defaults()[f.name]) for v in variants() if f.name in variant(v).uses}
                assert opt.help.startswith(docs[f.name] + " Default: "), (command, f.name)
                assert all(d in opt.help or d == "()" for d in defaults), (command, f.name, defaults)
            elif docs.get(f.name) and f.name not in ("verify_checksums", "shard", "num_shards", "storage_options"):
                assert opt.help.endswith(docs[f.name]), (command, f.name)


def test_experiment_offers_every_fit_option():
    fit, experiment = _options(cli.get_command(None, "fit")), _options(cli.get_command(None, "experiment"))
    grid_axes = {"variant", "seed", "groups", "gamma", "l1", "k"}  # the experiment's grid sets these itself
    missing = set(fit) - set(experiment) - grid_axes - {"as_json"}
    assert not missing, f"pipeline experiment lacks fit's {sorted(missing)}"
    assert "storage_options" in experiment
