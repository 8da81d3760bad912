"""`python -m benchmarks.crash_trials` end to end with one trial of each stage, so the script cannot rot."""

import json

from benchmarks.crash_trials import main


def test_one_crash_trial_of_harvest_and_of_fit_is_identical(tmp_path, capsys):
    out = tmp_path / "trials.json"
    assert main(["--trials", "1", "--out", str(out), "--workdir", str(tmp_path / "work"), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "harvest: 1/1 identical" in printed and "fit: 1/1 identical" in printed
    results = json.loads(out.read_text())
    assert [t["identical"] for t in results["harvest"] + results["fit"]] == [True, True]
    assert all(t["exit"] == 0 and t["reruns"] >= 1 for t in results["harvest"] + results["fit"])
