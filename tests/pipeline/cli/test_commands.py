"""The command group: commands imported only when used, listed from summaries that must match their docstrings."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from cli_helpers import run_cli

from benchmarks.startup_bench import loaded_by_help
from pipeline.cli import COMMANDS, cli, summary_line


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_listed_summary_is_the_first_sentence_of_its_commands_docstring(name):
    command = cli.get_command(None, name)
    assert isinstance(command, click.Command) and command.name == name
    assert summary_line(COMMANDS[name][1], 10_000) == command.get_short_help_str(10_000), (
        f"COMMANDS[{name!r}] has drifted from its command's docstring")


def test_the_top_level_help_imports_no_stage():
    assert loaded_by_help() == []  # in a fresh interpreter: none of torch, zarr, matplotlib, transformers, ...
    with_help = subprocess.run([sys.executable, "-m", "pipeline", "--help"], check=True, capture_output=True, text=True)
    for name in COMMANDS:
        assert f"\n  {name} " in with_help.stdout


@pytest.mark.parametrize("args", [(), ("store",)])
def test_a_group_alone_prints_its_help_and_exits_0(capsys, args):
    result = run_cli(capsys, *args)
    assert result.code == 0
    usage = result.stdout.splitlines()[0]
    assert usage.startswith("Usage: ") and usage.endswith(" ".join(["", *args, "[OPTIONS] COMMAND [ARGS]..."])), usage
    assert "Commands:" in result.stdout
    assert "error:" not in result.stdout + result.stderr
