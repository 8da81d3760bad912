"""The test hook that kills a process at an exact point of its work: the only way to test, in a real process, that a
rerun after a kill at that instant finishes what was started. Inert unless a test sets the variable."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

KILL_AT_ENV = "HFG_TEST_KILL_AT"
"""Tests only: ``<stage>:<point>[@<n>]`` makes the process SIGKILL itself the n-th time (default the 1st) it reaches
that point. The points: ``finalize:<step>`` and ``grow:<step>`` (store/finalize.py, store/writer.py),
``checkpoint:<point>`` (fit/checkpoint.py), ``synth:chunk-<k>`` (harvest/synthetic/runner.py). Unset, nothing
happens."""

_reached: dict[str, int] = {}


def kill_point(stage: str, point: str) -> None:
    """SIGKILL this process if the test hook asks for a kill at ``stage:point`` this time."""
    target = os.environ.get(KILL_AT_ENV)
    if not target:
        return
    name, _, nth = target.partition("@")
    here = f"{stage}:{point}"
    if name != here:
        return
    _reached[here] = _reached.get(here, 0) + 1
    if _reached[here] == int(nth or 1):
        log.warning("%s=%s: killing this process", KILL_AT_ENV, target)
        os.kill(os.getpid(), signal.SIGKILL)
