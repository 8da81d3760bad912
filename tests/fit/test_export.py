"""The SAELens export of every architecture loads in SAELens (``sae_lens.SAE.load_from_disk``), under the SAELens
architecture that reproduces it, and encodes and reconstructs as our SAE does."""

import json

import pytest
import sae_lens
import torch
from direct_store import make_meta, random_rows, write_store

from fit.architectures import variant as registered
from fit.config import VARIANTS as ALL_VARIANTS
from fit.config import SAEConfig, TrainConfig
from fit.export import export_saelens
from fit.runs import RunDir, load_sae
from fit.sae import SAE
from fit.trainer import fit

D = 24
VARIANTS = ("baseline", "hier", "hier-matryoshka", "topk", "batchtopk", "matryoshka")
EXPECTED = {"baseline": "standard", "hier": "standard", "hier-matryoshka": "standard", "topk": "topk",
            "batchtopk": "jumprelu", "matryoshka": "jumprelu"}


def _rows(n: int, mean: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Activation-like rows (structured directions, an offset, varied norms) around ``mean``."""
    return random_rows(n, D, seed=seed) * (torch.rand(n, 1) + 0.5) + mean


def _agree(ours: SAE, theirs: sae_lens.SAE, x: torch.Tensor) -> torch.Tensor:
    """Asserts that SAELens's SAE encodes and reconstructs ``x`` as ours does; returns the latents."""
    with torch.no_grad():
        z_ours = ours.encode(ours.normalise(x).x_BD)
        z_theirs = theirs.encode(x)
        assert torch.equal(z_theirs != 0, z_ours != 0)  # the same latents fire in every row
        assert torch.allclose(z_theirs, z_ours, atol=1e-4, rtol=1e-4)
        assert torch.allclose(theirs(x), ours(x), atol=1e-4, rtol=1e-4)
    return z_ours


def test_every_variant_has_its_saelens_architecture():
    assert {v: registered(v).cls.saelens for v in ALL_VARIANTS} == EXPECTED
    assert set(VARIANTS) == set(ALL_VARIANTS)  # a newly registered variant needs an export (and a case here)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("norm", ["layer_norm", "store_stats", "none"])
def test_saelens_loads_the_export_and_agrees(tmp_path, variant, norm):
    torch.manual_seed(0)
    mean, std = torch.randn(D) * 3, torch.rand(D) + 0.5
    cfg = SAEConfig.of(variant, groups=3, k=6, norm=norm, expansion=2.0)
    ours = SAE(cfg, D, store_mean=mean, store_std=std)
    with torch.no_grad():  # move away from the tied initialisation so every weight matters
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = _rows(200, mean)
    if variant in ("batchtopk", "matryoshka"):
        with torch.no_grad():  # a threshold that bites: about half the positive pre-activations stay
            norm_x = ours.normalise(x).x_BD
            pre = norm_x @ ours.W_enc + ours.b_enc
            ours.threshold.fill_(pre[pre > 0].median())
    export_saelens(ours, tmp_path / "saelens", {"model_name": "test", "hook_name": "blocks.1.hook_resid_post"})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "saelens"), device="cpu")
    assert theirs.cfg.architecture() == EXPECTED[variant]
    assert theirs.cfg.d_sae == 48 and theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    z = _agree(ours, theirs, x)
    l0 = (z != 0).sum(-1)
    if variant == "topk":
        assert theirs.cfg.k == 6 and l0.max() == 6
    if variant in ("batchtopk", "matryoshka"):
        assert torch.equal(theirs.threshold, torch.full((48,), float(ours.threshold)))
        positive = (pre > 0).sum(-1)
        assert (l0 < positive).float().mean() > 0.5  # the threshold removed latents ReLU alone would keep


def test_every_architecture_trained_in_one_pass_exports_and_agrees(tmp_path):
    """``pipeline fit``'s own export of a pass that trains every architecture: each run's saelens/ folder loads in
    SAELens and agrees with the run's SAE (BatchTopK and Matryoshka with the threshold their training estimated)."""
    meta = make_meta(n_rows=2048, d=D, chunk_rows=256)
    acts = random_rows(2048, D)
    write_store(str(tmp_path / "s.zarr"), meta, acts)
    saes = [SAEConfig.of(v, groups=3, k=4, expansion=2.0, l1=0.01) for v in VARIANTS]
    results = fit(TrainConfig(store=str(tmp_path / "s.zarr"), out=str(tmp_path / "runs"), batch_size=128,
                              tokens=128 * 12, holdout=0.1, log_every=6, checkpoint_every=0), saes)
    assert len(results) == len(VARIANTS)
    x = acts[-200:].float()
    for cfg in saes:
        run = RunDir(tmp_path / "runs" / cfg.name)
        ours, _ = load_sae(run)
        theirs = sae_lens.SAE.load_from_disk(str(run.export_dir), device="cpu")
        assert theirs.cfg.architecture() == EXPECTED[cfg.variant]
        exported = json.loads((run.export_dir / "cfg.json").read_text())["metadata"]
        assert exported["sae_variant"] == cfg.variant
        if cfg.variant in ("topk", "batchtopk", "matryoshka"):
            assert exported["k"] == 4
        if "matryoshka" in cfg.variant:
            assert exported["matryoshka_widths"] == [16, 32, 48]
        if cfg.variant in ("batchtopk", "matryoshka"):
            assert float(ours.threshold) > 0  # estimated in training, not the untrained -1
        _agree(ours, theirs, x)
