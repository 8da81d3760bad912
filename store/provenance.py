"""Where a record came from: the tool's version and commit, the libraries that computed it, the device, the time.

Every record other people read carries one (eval.json, training.json, results.json, claims.json, a store's
attributes), beside its own schema version and the config that produced it, so that a figure can be traced to
the code and the libraries behind it, and a reader of an older record can say which version wrote it.
"""

from __future__ import annotations

import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

TOOL = "hfg-sae"
"""This tool's distribution name (pyproject.toml)."""
LIBRARIES = ("torch", "transformers", "datasets", "zarr", "sae-lens")
"""The libraries whose versions a record carries: they compute or store its numbers."""
NOT_A_CHECKOUT = "not a git checkout"
SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""The folder the tool's packages are imported from (a git checkout for a development install)."""


@dataclass(frozen=True)
class Provenance:
    """Who made a record, with what and when."""

    tool_version: str
    """This tool's version (pyproject.toml), or "not installed" when run from a source tree alone."""
    git_commit: str
    """The commit of the tool's source, "+dirty" when it had uncommitted changes; "not a git checkout" otherwise."""
    libraries: dict[str, str]
    """Version of each library of :data:`LIBRARIES` ("not installed" where absent)."""
    device: str
    """The device that computed the record (``cpu``, ``cuda:0 (NVIDIA H100 80GB HBM3)``); "none" where nothing ran
    on one (a report)."""
    created_at: str
    """When the record was made (UTC, ISO 8601, seconds)."""
    python: str = field(default="")
    """The Python version."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Provenance:
        known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def describe(self) -> str:
        """One line for a report: tool, commit and the libraries' versions."""
        libs = ", ".join(f"{k} {v}" for k, v in self.libraries.items() if v != "not installed")
        where = "" if self.device == "none" else f" on {self.device}"
        return f"{TOOL} {self.tool_version} ({self.git_commit}), {libs};{where} {self.created_at}"


def provenance(device: Any = "none") -> Provenance:
    """This process's provenance now, on ``device`` (a torch.device or its name)."""
    import platform

    return Provenance(tool_version=_version(TOOL), git_commit=git_commit(), libraries=library_versions(),
                      device=describe_device(device), created_at=now(), python=platform.python_version())


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@cache
def library_versions() -> dict[str, str]:
    return {name: _version(name) for name in LIBRARIES}


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


@cache
def git_commit(root: Path = SOURCE_ROOT) -> str:
    """The commit of ``root``'s checkout, "+dirty" with uncommitted changes to tracked files; "not a git checkout"
    where it is none (an installed wheel) or git is missing."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0 or not (root / ".git").exists():
            return NOT_A_CHECKOUT
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return NOT_A_CHECKOUT
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def describe_device(device: Any) -> str:
    """A device's name, with the accelerator's model for CUDA."""
    name = str(device)
    if name.startswith("cuda"):
        import torch

        index = torch.device(name).index or 0
        return f"{name} ({torch.cuda.get_device_name(index)})"
    return name
