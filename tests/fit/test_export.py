"""The SAELens export loads in SAELens and reconstructs exactly as our SAE does."""

import pytest
import sae_lens
import torch

from fit.config import SAEConfig
from fit.export import export_saelens
from fit.sae import SAE


@pytest.mark.parametrize("norm", ["layer_norm", "store_stats", "none"])
def test_saelens_loads_the_export_and_agrees(tmp_path, norm):
    torch.manual_seed(0)
    d = 24
    mean, std = torch.randn(d) * 3, torch.rand(d) + 0.5
    ours = SAE(SAEConfig(variant="hier", groups=3, norm=norm, expansion=2.0), d, store_mean=mean, store_std=std)
    with torch.no_grad():  # move away from the tied initialisation so every weight matters
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    export_saelens(ours, tmp_path / "saelens", {"model_name": "test", "hook_name": "blocks.1.hook_resid_post"})
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "saelens"), device="cpu")
    x = torch.randn(50, d) * 4 + mean
    with torch.no_grad():
        norm_x = ours.normalise(x)
        assert torch.allclose(theirs.encode(x), ours.encode(norm_x.x_BD), atol=1e-4)
        assert torch.allclose(theirs(x), ours(x), atol=1e-4)
    assert theirs.cfg.d_sae == 48 and theirs.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
