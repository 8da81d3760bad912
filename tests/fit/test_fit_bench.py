"""The fit benchmark's stacked-against-looped figure at a quick size, so the script cannot rot (its figures are
measured by `make bench`, never asserted here)."""

from benchmarks.common import BenchReport
from benchmarks.fit_bench import stacked_vs_looped


def test_the_stacked_vs_looped_figures_are_measured(tmp_path):
    report = BenchReport()
    stacked_vs_looped(report, str(tmp_path), sizes=((32, 3, 4), (16, 2, 3)), rows=4096)
    assert [f.name for f in report.figures] == ["3 SAEs of one shape, stacked vs the per-SAE loop (d=n=32)",
                                                "2 SAEs of one shape, stacked vs the per-SAE loop (d=n=16)"]
    assert all(f.ours > 0 and f.baseline > 0 and f.unit == "tok/s" for f in report.figures)
    assert (tmp_path / "stack-True-32" / "hier-K5-g1.5-l0.04-s2" / "sae.safetensors").exists()
