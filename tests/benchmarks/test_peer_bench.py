"""The peer benchmark (our TopK step against SAELens's and sparsify's trainers) at its quick size, so the script
cannot rot: every trainer takes its steps on the same batches. Its figures are measured by `make bench`, never
asserted here."""

import json
import sys

from benchmarks.common import BenchReport
from benchmarks.peer_bench import run, sparsify_missing

SHAPE = "TopK k=8 d=64 n=256"


def _quick(tmp_path) -> tuple[BenchReport, dict]:
    report = BenchReport()
    run(report, quick=True)
    report.write(tmp_path / "bench.json")
    return report, json.loads((tmp_path / "bench.json").read_text())


def _check_saelens(report: BenchReport) -> None:
    saelens = report.figures[0]
    assert saelens.name == f"{SHAPE}: our training step vs SAELens's"
    assert saelens.ours > 0 and saelens.baseline > 0 and saelens.unit == "tok/s" and saelens.target == 2.0
    assert "SAELens dense" in saelens.note and "sparse" in saelens.note


def test_the_quick_peer_bench_measures_every_installed_peer(tmp_path):
    report, written = _quick(tmp_path)
    _check_saelens(report)
    if sparsify_missing() is None:  # installed (make bench-peers-env): measured
        assert [f.name for f in report.figures[1:]] == [f"{SHAPE}: our training step vs sparsify's"]
        assert report.figures[1].baseline > 0 and report.notes == []
    else:
        assert len(report.figures) == 1 and len(report.notes) == 1
    assert written["notes"] == report.notes and len(written["figures"]) == len(report.figures)


def test_a_peer_that_cannot_be_imported_is_reported_not_skipped(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sparsify", None)  # how Python blocks an import
    report, written = _quick(tmp_path)
    _check_saelens(report)
    assert len(report.figures) == 1
    assert written["notes"] == [f"{SHAPE}: sparsify not measured: eai-sparsify is not installed "
                                "(make bench-peers-env installs it)"]
