"""Terminal output: logging through rich, progress bars with rate and ETA, one-line errors."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

console = Console(stderr=True, soft_wrap=True)


def setup_logging(verbosity: int) -> None:
    level = {0: logging.INFO, 1: logging.DEBUG}.get(verbosity, logging.WARNING if verbosity < 0 else logging.DEBUG)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(console=console, show_path=False, markup=False)
        logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", force=True, handlers=[handler])
    else:  # logs and CI: plain, unwrapped lines that grep and copy-paste well
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                            force=True, stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "fsspec", "botocore", "s3fs", "aiobotocore", "filelock", "datasets"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_hf_libraries()


def _quiet_hf_libraries() -> None:
    """No progress bars or info chatter from transformers / datasets / the hub, which own their own logging.

    Importing them costs seconds, and a fit never needs them: where they are not imported yet, the environment
    variables they read at import time do the same job.
    """
    for var, value in (("TRANSFORMERS_VERBOSITY", "error"), ("DATASETS_VERBOSITY", "error"),
                       ("HF_DATASETS_DISABLE_PROGRESS_BARS", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1")):
        os.environ.setdefault(var, value)
    if "transformers" in sys.modules:
        transformers = sys.modules["transformers"]
        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    if "datasets" in sys.modules:
        datasets = sys.modules["datasets"]
        datasets.utils.logging.disable_progress_bar()
        datasets.utils.logging.set_verbosity_error()


class RateColumn(ProgressColumn):
    """Items per second, with the task's unit (``tok/s``, ``step/s``)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        unit = task.fields.get("unit", "it")
        if speed is None:
            return Text(f"- {unit}/s", style="progress.data.speed")
        return Text(f"{rate_text(speed)} {unit}/s", style="progress.data.speed")


def rate_text(speed: float) -> str:
    """Three significant figures below 100 (an LM pass may take seconds a context), whole numbers above."""
    return f"{speed:,.0f}" if speed >= 100 else f"{speed:.3g}"


def make_progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
        disable=not console.is_terminal and os.environ.get("PIPELINE_PROGRESS", "") != "1",
    )


@contextmanager
def progress_bar(description: str, unit: str) -> Iterator:
    """Yields ``update(done, total, info="", unit_now=None)``: a callback that any stage can call as it goes; a stage
    that counts something else than ``unit`` (contexts, not rows) names it.

    Without a terminal (CI, logs) the bar is replaced by a log line every 10% so long work still shows life.
    """
    progress = make_progress()
    task = progress.add_task(description, total=None, unit=unit, info="")
    state: dict = {"logged": -1}
    log = logging.getLogger("pipeline")

    def update(done: int, total: int, info: str = "", unit_now: str | None = None) -> None:
        if total != state.get("total") or done < state.get("done", 0):  # a new stage reuses the bar
            progress.reset(task)
            state.update(total=total, logged=-1)
        state["done"] = done
        shown = unit_now or unit
        progress.update(task, completed=done, total=total, info=info, unit=shown)
        if progress.disable and total:
            decile = int(10 * done / total)
            if decile > state["logged"]:
                state["logged"] = decile
                t = progress.tasks[0]
                rate = f", {rate_text(t.speed)} {shown}/s" if t.speed else ""
                log.info("%s: %d/%d %s%s %s", description, done, total, shown, rate, info)

    with progress:
        yield update
