"""`python -m benchmarks.gpu_check` (`make gpu-check`) end to end on the CPU at a tiny size, so the script a person
runs on a GPU box cannot rot: every phase runs through the real harvest, fit and evaluate on the tiny Gemma-2."""

import json

import pytest

from benchmarks.gpu_check import main

PHASES = ["harvest", "fit-1", "fit-1-bf16", "fit-3", "fit-3-bf16", "evaluate"]


def test_every_phase_runs_on_the_cpu_and_says_what_it_could_not_measure(tiny_model_dir, kjv_file, tmp_path):
    out = tmp_path / "check.json"
    main.main(["--model", str(tiny_model_dir), "--dataset", str(kjv_file), "--layer", "2", "--tokens", "2000",
               "--ctx", "32", "--fit-steps", "4", "--fit-batch", "256", "--warmup-steps", "1", "--saes", "1",
               "--saes", "3", "--kl-contexts", "2", "--device", "cpu", "--out", str(out), "--workdir", str(tmp_path)],
              standalone_mode=False)
    result = json.loads(out.read_text())
    assert list(result["phases"]) == PHASES
    for name, phase in result["phases"].items():
        assert phase["tokens"] > 0 and phase["seconds"] > 0 and phase["tokens_per_s"] > 0, name
        assert phase["peak_gpu_bytes"] is None, name  # no GPU: no figure, rather than a made-up one
    phases = result["phases"]
    assert phases["harvest"]["tokens"] == 2000 and phases["harvest"]["detail"]["compute_dtype"] == "float32"
    for m in (1, 3):
        for bf16 in (False, True):
            d = phases[f"fit-{m}{'-bf16' if bf16 else ''}"]
            assert d["tokens"] == 4 * 256 and d["detail"]["saes"] == m
            assert d["detail"]["bf16_autocast_asked"] is bf16
            assert d["detail"]["bf16_autocast_applied"] is False  # autocast applies on CUDA only
            assert d["detail"]["sae_tokens_per_s"] == pytest.approx(m * d["tokens_per_s"])
    assert phases["evaluate"]["detail"]["kl_contexts"] == 2
    assert result["cuda"] is False and result["gpu"] is None
    assert any("no CUDA device" in note for note in result["notes"])
    assert not list(tmp_path.glob("gpu-check-*"))  # its stores and runs are gone


def test_a_refused_setting_is_one_line(tiny_model_dir, kjv_file, tmp_path):
    import click

    with pytest.raises(click.ClickException, match="--tokens must be positive"):
        main.main(["--model", str(tiny_model_dir), "--dataset", str(kjv_file), "--tokens", "0", "--device", "cpu",
                   "--out", str(tmp_path / "x.json")], standalone_mode=False)


def test_another_variant_runs_through_every_fit_phase(tiny_model_dir, kjv_file, tmp_path):
    out = tmp_path / "check.json"
    main.main(["--model", str(tiny_model_dir), "--dataset", str(kjv_file), "--layer", "2", "--tokens", "1000",
               "--ctx", "32", "--fit-steps", "2", "--fit-batch", "128", "--warmup-steps", "0", "--saes", "2",
               "--variant", "hier", "--variant", "topk", "--k", "8", "--kl-contexts", "1", "--device", "cpu",
               "--out", str(out), "--workdir", str(tmp_path)], standalone_mode=False)
    phases = json.loads(out.read_text())["phases"]
    assert list(phases) == ["harvest", "fit-2", "fit-2-bf16", "fit-topk-2", "fit-topk-2-bf16", "evaluate"]
    assert phases["fit-topk-2"]["detail"]["variant"] == "topk" and phases["fit-topk-2"]["detail"]["sae"].startswith(
        "topk-k8")
    assert phases["evaluate"]["detail"]["run"].startswith("hier")  # the first variant's SAE is evaluated


def test_a_bad_variant_is_refused_before_the_harvest(tmp_path):
    import click

    with pytest.raises(click.ClickException, match="unknown variant 'nope'"):
        main.main(["--model", str(tmp_path / "no-model"), "--dataset", str(tmp_path / "no-data.jsonl"),
                   "--variant", "nope", "--device", "cpu", "--out", str(tmp_path / "x.json")], standalone_mode=False)
