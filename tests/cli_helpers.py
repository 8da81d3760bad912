"""Running the `pipeline` command the way a user does, in-process or as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from pipeline.cli import main


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str


def call_cli(*args: str) -> int:
    """Invoke `pipeline ARGS` in this process through the same entry point as the console script; its exit code."""
    old = sys.argv
    sys.argv = ["pipeline", *map(str, args)]
    try:
        main()
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> CliResult:
    """`call_cli`, with what it printed."""
    capsys.readouterr()
    code = call_cli(*args)
    out = capsys.readouterr()
    return CliResult(code, out.out, out.err)


def pipeline_subprocess(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kwargs.pop("env", {})}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *map(str, args)], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **kwargs,
    )


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    assert result.code == 2, (result.code, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])


# Imports the pipeline once, then forks a child per fit in turn (a real process, which SIGKILLs itself at its kill
# point), which saves each one the seconds of importing torch. The parent has run no torch op, so forking it is
# safe. One thread each: these tiny SAEs run many times faster so on a busy machine.
FORKER = """
import importlib, json, os, sys
import datasets, transformers  # what every command's logging set-up imports
import fit.trainer
from pipeline.cli import COMMANDS, cli, main
for command in COMMANDS:  # the command modules, which the group imports only when one runs
    cli.get_command(None, command)
for name in sys.argv[1:]:
    importlib.import_module(name)
transformers.utils.logging.set_verbosity_error()
datasets.utils.logging.disable_progress_bar()
status = {}
for label, env, argv in json.loads(sys.stdin.read()):
    pid = os.fork()
    if pid == 0:
        os.environ.update(env)
        sys.argv = ["pipeline", *argv]
        try:
            main()
        except SystemExit as exc:
            os._exit(exc.code if isinstance(exc.code, int) else 1)
        os._exit(0)
    status[label] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(status))
"""


def forked_fits(jobs: list[tuple[str, dict, list]], stderr: list[str] | None = None,
                preload: tuple[str, ...] = ()) -> dict[str, int]:
    """Run each job's (label, env, pipeline arguments) in its own process, in order; their exit codes (-9 for
    SIGKILL). Their stderr, all together, is appended to ``stderr`` if given. ``preload``: modules the parent imports
    once for every child (e.g. ``sae_lens.synthetic``, seconds to import)."""
    payload = json.dumps([(label, env, list(map(str, argv))) for label, env, argv in jobs])
    done = subprocess.run([sys.executable, "-c", FORKER, *preload], input=payload, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    if stderr is not None:
        stderr.append(done.stderr)
    return json.loads(done.stdout.splitlines()[-1])
