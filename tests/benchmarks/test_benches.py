"""The benchmark sections added with ground truth, integrity and the start-up figure run end to end at small sizes
(their figures are measured by `make bench`, never asserted here)."""

from benchmarks.common import BenchReport


def test_the_seal_section_compares_a_sealed_open_with_an_unsealed_one(tmp_path):
    from benchmarks import seal_bench

    report = BenchReport()
    seal_bench.run(report, workdir=str(tmp_path), rows=20_000, opens=3)
    opens, listing = report.figures
    assert opens.unit == "opens/s" and opens.ours > 0 and opens.baseline > 0
    assert "5 chunks per array" in opens.name and opens.target == 0.95 and listing.ours > 0


def test_the_startup_section_times_pipeline_help_and_names_what_it_loaded():
    from benchmarks import startup_bench

    report = BenchReport()
    startup_bench.run(report, starts=1, warm=0)
    [figure] = report.figures
    assert figure.ours > 0 and figure.baseline > figure.ours  # the interpreter alone starts faster
    assert "matplotlib" not in figure.note and "zarr" not in figure.note and "heavy libraries it loaded" in figure.note
