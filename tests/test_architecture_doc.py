"""docs/architecture.md stays in line with the code: every module or folder it names exists, and every module of the
four packages is named there (itself, or its folder)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("store", "harvest", "fit", "pipeline")
PATH = re.compile(r"`((?:store|harvest|fit|pipeline|benchmarks|tests)/[A-Za-z0-9_./]*)`")


def named() -> set[str]:
    return set(PATH.findall(DOC.read_text()))


def test_every_module_the_doc_names_exists():
    missing = sorted(p for p in named() if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names what does not exist: {missing}"


def test_every_module_is_named_in_the_doc():
    names = named()
    unnamed = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if path.name in ("__init__.py", "__main__.py", "errors.py"):
                continue  # a package's docstring, the entry point, the errors (the table's first row names them)
            # A sub-package's folder covers its modules; a top-level package's name covers nothing.
            folders = {p.relative_to(ROOT).as_posix() + "/" for p in path.parents if ROOT in p.parent.parents}
            if rel not in names and not folders & names:
                unnamed.append(rel)
    assert not unnamed, f"docs/architecture.md does not say where these live: {unnamed}"


def test_the_check_sees_a_stale_name():
    assert "fit/architectures/" in named() and not (ROOT / "fit/architectures.py").exists()
