"""Each architecture's training loss and gradients against a float64 reference written out here from plain torch
formulas (not from fit's functions), through the active-pair path and the dense path; BatchTopK's threshold; AuxK
on a case whose dead latents are known; the registry and the configuration's names and normalisation."""

from dataclasses import dataclass

import pytest
import torch

from fit.architectures import ARCH_FIELDS, register, variants
from fit.architectures.relu_l1 import ReLUL1
from fit.architectures.topk import TopKFields
from fit.config import VARIANTS, SAEConfig, expand_grid
from fit.errors import FitError
from fit.sae import SAE
from fit.stack import SAEStack

D, N_LATENTS, B, K = 10, 20, 32, 3
EXPANSION = N_LATENTS / D


def stack_of(cfgs: list[SAEConfig], pairs: bool) -> tuple[SAEStack, torch.Tensor]:
    """A float64 stack of SAEs moved away from their tied initialisation, and normalised rows for it."""
    torch.manual_seed(0)
    saes = []
    for c in cfgs:
        sae = SAE(c, D).double()
        with torch.no_grad():
            for p in sae.parameters():
                p.add_(0.2 * torch.randn_like(p))
        saes.append(sae)
    stack = SAEStack(saes).double()
    stack.sparse_mode = "on" if pairs else "off"
    x = torch.randn(B, D, dtype=torch.float64) * 2 + 0.5
    return stack, stack.inputs(x, {})


def member(stack: SAEStack, cfg: SAEConfig) -> SAE:
    """Member 0 as a float64 SAE (``member_sae`` gives float32)."""
    sae = SAE(cfg, D).double()
    sae.load_state_dict(stack.member_state(0))
    return sae


def params(stack: SAEStack, m: int) -> dict[str, torch.Tensor]:
    return {k: getattr(stack, k)[m].detach().clone().requires_grad_() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}


# --- the references ------------------------------------------------------------------------------------------------


def ref_topk(p, x, k):
    pre = x @ p["W_enc"] + p["b_enc"]
    v, i = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, i, v.clamp(min=0))


def ref_batchtopk(p, x, k):
    post = (x @ p["W_enc"] + p["b_enc"]).clamp(min=0)
    keep = torch.zeros(post.numel(), dtype=torch.bool)
    keep[post.flatten().topk(k * x.shape[0]).indices] = True
    return post * keep.view(post.shape)


def ref_mse(p, x, z):
    return ((x - (z @ p["W_dec"] + p["b_dec"])) ** 2).sum(-1).mean()


def ref_prefix_mean(p, x, z, ends):
    return torch.stack([((x - (z[:, :e] @ p["W_dec"][:e] + p["b_dec"])) ** 2).sum(-1).mean() for e in ends]).mean()


def ref_group_l1(x, z, cfg):
    f = cfg.arch_fields  # the baseline's: one group, gamma 1
    w = torch.cat([torch.full((b - a,), f.l1 * f.gamma ** g, dtype=torch.float64)
                   for g, (a, b) in enumerate(group_ends(f.groups))]).float().double()  # kept in float32
    return (z * w).sum(-1).mean()


def group_ends(groups):
    size, extra = divmod(N_LATENTS, groups)
    bounds, start = [], 0
    for g in range(groups):
        stop = start + size + (g < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def reference_loss(cfg, p, x, l1_scale):
    if cfg.variant == "topk":
        return ref_mse(p, x, ref_topk(p, x, cfg.k))
    if cfg.variant == "batchtopk":
        return ref_mse(p, x, ref_batchtopk(p, x, cfg.k))
    ends = list(cfg.prefixes or ()) or [b for _, b in group_ends(cfg.arch_fields.groups)]
    ends += [N_LATENTS] if ends[-1] != N_LATENTS else []
    if cfg.variant == "matryoshka":
        return ref_prefix_mean(p, x, ref_batchtopk(p, x, cfg.k), ends)
    z = (x @ p["W_enc"] + p["b_enc"]).clamp(min=0)
    if cfg.variant == "hier-matryoshka":
        return ref_prefix_mean(p, x, z, ends) + l1_scale * ref_group_l1(x, z, cfg)
    return ref_mse(p, x, z) + l1_scale * ref_group_l1(x, z, cfg)


CASES = {
    "baseline": dict(variant="baseline"),
    "hier": dict(variant="hier", groups=3, gamma=2.0, l1=0.1),
    "topk": dict(variant="topk", k=K),
    "batchtopk": dict(variant="batchtopk", k=K),
    "matryoshka": dict(variant="matryoshka", k=K, groups=4),
    "matryoshka-prefixes": dict(variant="matryoshka", k=K, prefixes=(3, 9)),
    "hier-matryoshka": dict(variant="hier-matryoshka", groups=3, gamma=2.0, l1=0.1),
}


@pytest.mark.parametrize("pairs", [True, False], ids=["pairs", "dense"])
@pytest.mark.parametrize("case", CASES)
def test_loss_and_gradients_equal_the_float64_reference(case, pairs):
    cfgs = [SAEConfig(**CASES[case], expansion=EXPANSION, seed=s) for s in (0, 1)]
    stack, x_n = stack_of(cfgs, pairs)
    loss_M, parts = stack(x_n, 0.7)
    loss_M.sum().backward()
    for m, cfg in enumerate(cfgs):
        p = params(stack, m)
        ref = reference_loss(cfg, p, x_n[0], 0.7)
        ref.backward()
        torch.testing.assert_close(loss_M[m], ref.detach(), rtol=1e-12, atol=0)
        for name, t in p.items():
            torch.testing.assert_close(getattr(stack, name).grad[m], t.grad, rtol=1e-9, atol=1e-12,
                                       msg=f"{cfg.name} {name}")
        if cfg.variant in ("topk", "batchtopk", "matryoshka"):
            assert parts["penalty"][m] == 0
    assert parts["sq"].shape == (2, B)


@pytest.mark.parametrize("variant", ["topk", "batchtopk", "matryoshka"])
def test_topk_family_latent_counts(variant):
    stack, x_n = stack_of([SAEConfig.of(variant, k=K, expansion=EXPANSION, groups=4)], pairs=True)
    _, parts = stack(x_n, 1.0)
    counts = (parts["z"].vals != 0).sum(-1)  # the pairs of each row
    if variant == "topk":
        assert (counts <= K).all() and counts.sum() > 0
    else:
        assert int(counts.sum()) == K * B  # k x B over the batch (pre-activations > 0 here), rows vary
        assert counts.max() > counts.min()


def test_batchtopk_threshold_is_the_running_mean_of_batch_minima_and_drives_inference():
    cfg = SAEConfig(variant="batchtopk", k=K, expansion=EXPANSION)
    stack, _ = stack_of([cfg], pairs=True)
    assert float(stack.threshold[0]) == -1.0  # not estimated yet
    p = params(stack, 0)
    theta = None
    torch.manual_seed(5)
    for _ in range(4):
        x = torch.randn(B, D, dtype=torch.float64)
        x_n = stack.inputs(x, {})
        stack(x_n, 1.0)
        z = ref_batchtopk(p, x_n[0], K)
        low = float(z[z > 0].min().detach())
        theta = low if theta is None else 0.99 * theta + 0.01 * low
        assert float(stack.threshold[0]) == pytest.approx(theta, rel=1e-12)
    sae = member(stack, cfg)
    assert float(sae.threshold) == pytest.approx(theta, rel=1e-12)  # saved with the weights
    x_n = sae.normalise(torch.randn(64, D, dtype=torch.float64)).x_BD
    pre = x_n @ p["W_enc"].detach() + p["b_enc"].detach()
    expected = torch.where(pre > theta, pre, torch.zeros_like(pre)).clamp(min=0)
    torch.testing.assert_close(sae.encode(x_n), expected, rtol=1e-12, atol=0)
    # Inference L0 is the threshold's, not k: nothing makes it exactly k per row.
    assert (sae.encode(x_n) > 0).sum(-1).float().std() > 0


def test_topk_inference_keeps_k_per_row():
    cfg = SAEConfig(variant="topk", k=K, expansion=EXPANSION)
    stack, x_n = stack_of([cfg], pairs=True)
    sae = member(stack, cfg)
    p = params(stack, 0)
    torch.testing.assert_close(sae.encode(x_n[0]), ref_topk(p, x_n[0], K).detach(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("pairs", [True, False], ids=["pairs", "dense"])
@pytest.mark.parametrize("variant", ["topk", "batchtopk", "matryoshka"])
def test_auxk_on_known_dead_latents(variant, pairs):
    window, aux_k, alpha = 40, 4, 0.25
    cfg = SAEConfig.of(variant, k=K, expansion=EXPANSION, groups=2, aux_alpha=alpha, aux_k=aux_k,
                    dead_tokens=window)
    stack, x_n = stack_of([cfg], pairs)
    since = torch.zeros(N_LATENTS, dtype=torch.int64)
    since[:8] = 100  # long silent: dead after this step unless they fire in it; the others have 0 + B < 40
    stack.tokens_since_fired_F[0] = since
    with torch.no_grad():  # latents 0-7: small positive pre-activations, never among the largest, so they stay dead
        stack.W_enc[0, :, :8] *= 0.02
        stack.b_enc[0, :8] = 0.05
    p = params(stack, 0)
    x = x_n[0]
    z = ref_topk(p, x, K) if variant == "topk" else ref_batchtopk(p, x, K)
    fired = (z != 0).any(0)
    after = torch.where(fired, torch.zeros_like(since), since + B)
    dead = after >= window
    assert 0 < int(dead.sum()) <= 8

    loss_M, parts = stack(x_n, 1.0)
    loss_M.sum().backward()
    assert torch.equal(stack.tokens_since_fired_F[0], after)
    assert float(parts["dead"][0]) == int(dead.sum())

    main = ref_mse(p, x, z) if variant != "matryoshka" else ref_prefix_mean(p, x, z, [10, 20])
    e = (x - (z @ p["W_dec"] + p["b_dec"])).detach()
    post = (x @ p["W_enc"] + p["b_enc"]).clamp(min=0)
    v, i = post.masked_fill(~dead, float("-inf")).topk(min(aux_k, int(dead.sum())), dim=-1)
    aux_z = torch.zeros_like(post).scatter(-1, i, v)
    aux = ((e - aux_z @ p["W_dec"]) ** 2).sum(-1).mean() / ((e - e.mean(0)) ** 2).sum(-1).mean()
    ref = main + alpha * aux
    ref.backward()
    torch.testing.assert_close(parts["aux"][0], aux.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(loss_M[0], ref.detach(), rtol=1e-12, atol=0)
    for name, t in p.items():
        torch.testing.assert_close(getattr(stack, name).grad[0], t.grad, rtol=1e-9, atol=1e-12, msg=name)
    # The dead latents are outside the main selection: what moves their encoder columns is AuxK.
    assert stack.W_enc.grad[0][:, dead].abs().sum() > 0


def test_auxk_is_zero_with_no_dead_latent():
    cfg = SAEConfig(variant="topk", k=K, expansion=EXPANSION, aux_alpha=1.0, dead_tokens=10**6)
    stack, x_n = stack_of([cfg], pairs=True)
    loss_M, parts = stack(x_n, 1.0)
    assert float(parts["aux"][0].detach()) == 0 and float(parts["dead"][0]) == 0
    torch.testing.assert_close(loss_M[0], parts["recon"][0])


# --- registry and configuration ------------------------------------------------------------------------------------


def test_every_variant_is_registered_and_the_paper_two_come_first():
    assert VARIANTS == variants() == ("baseline", "hier", "topk", "batchtopk", "matryoshka", "hier-matryoshka")
    with pytest.raises(ValueError, match="registered twice"):
        register("topk", ReLUL1, TopKFields)

    @dataclass(frozen=True)
    class Odd:
        nope: int = 1

    with pytest.raises(ValueError, match="unknown fields"):
        register("new", ReLUL1, Odd)
    assert "new" not in variants()


def test_names_show_what_distinguishes_each_run_and_old_names_stay():
    names = [SAEConfig(variant=v).name for v in VARIANTS]
    assert names == ["baseline-l0.04-s0", "hier-K5-g1.5-l0.04-s0", "topk-k64-s0", "batchtopk-k64-s0",
                     "matryoshka-K5-k64-s0", "hier-matryoshka-K5-g1.5-l0.04-s0"]
    assert SAEConfig(variant="topk", k=32, aux_alpha=1 / 32).name == "topk-k32-aux0.03125-s0"
    assert SAEConfig(variant="batchtopk", aux_alpha=0.1, aux_k=256, dead_tokens=5000).name == (
        "batchtopk-k64-aux0.1-ak256-dt5000-s0")
    assert SAEConfig(variant="matryoshka", prefixes=[128, 512]).name == "matryoshka-p128_512-k64-s0"
    assert SAEConfig(variant="hier-matryoshka", prefixes=(100,)).name == "hier-matryoshka-K5-p100-g1.5-l0.04-s0"


def test_config_json_of_baseline_and_hier_is_what_it_was():
    """Old runs resume and evaluate: their config.json's sae section is compared field by field."""
    assert SAEConfig(variant="hier").to_dict() == {"variant": "hier", "l1": 0.04, "groups": 5, "gamma": 1.5,
                                                   "expansion": 1.0, "seed": 0, "norm": "layer_norm",
                                                   "recon": "mse"}
    assert set(SAEConfig(variant="baseline").to_dict()) == set(SAEConfig(variant="hier").to_dict())
    for v in VARIANTS:
        cfg = SAEConfig.of(v, prefixes=(4,), aux_alpha=0.5)
        again = SAEConfig.from_dict(cfg.to_dict())  # what load_sae rebuilds from config.json
        assert again.to_dict() == cfg.to_dict() and again.name == cfg.name
        assert SAEConfig.from_dict(SAEConfig(variant=v).to_dict()) == SAEConfig(variant=v)
    # A topk run's config.json from before the variants had their own fields: lambda 0, one group, gamma 1.
    old = {"variant": "topk", "l1": 0.0, "groups": 1, "gamma": 1.0, "k": 32, "aux_alpha": 0.0, "expansion": 1.0,
           "seed": 0, "norm": "layer_norm", "recon": "mse"}
    topk = SAEConfig(variant="topk", k=32)
    assert SAEConfig.from_dict(old) == topk and topk.to_dict() == old


def test_a_field_the_variant_does_not_take_is_refused_not_rewritten():
    with pytest.raises(FitError, match=r"^topk takes no --l1 \(it takes --k, --aux-alpha, --aux-k, --dead-tokens\): "
                                       r"leave it out, or use a variant that takes it \(baseline, hier, "
                                       r"hier-matryoshka\)$"):
        SAEConfig(variant="topk", l1=0.5)
    with pytest.raises(FitError, match=r"^baseline takes no --groups"):
        SAEConfig(variant="baseline", groups=3)
    cfg = SAEConfig(variant="topk")
    assert cfg.l1 is None and cfg.groups is None and cfg.k == 64
    assert SAEConfig(variant="baseline").arch_fields.groups == 1  # the baseline's one group is its own, fixed


def test_fields_a_variant_does_not_use_do_not_multiply_it():
    axes = {"variant": list(VARIANTS), "seed": [0], "groups": [3, 5], "gamma": [1.5, 2.0], "l1": [0.04, 0.08],
            "k": [32, 64]}
    grid = expand_grid(axes)
    counts = {v: sum(c.variant == v for c in grid) for v in VARIANTS}
    assert counts == {"baseline": 2, "hier": 8, "topk": 2, "batchtopk": 2, "matryoshka": 4, "hier-matryoshka": 8}
    assert {c.l1 for c in grid if c.variant == "topk"} == {None}
    assert {c.k for c in grid if c.variant == "hier"} == {None}
    assert set(ARCH_FIELDS) >= {"k", "aux_alpha", "prefixes"}
    # Fields common to the grid reach only the variants that take them.
    assert {c.aux_alpha for c in expand_grid({"variant": ["topk", "hier"]}, aux_alpha=0.1)} == {0.1, None}


@pytest.mark.parametrize("kw, message", [
    (dict(variant="topk", k=0), "--k must be at least 1"),
    (dict(variant="topk", aux_alpha=-1.0), "--aux-alpha >= 0"),
    (dict(variant="matryoshka", prefixes=(5, 3)), "--prefixes must be increasing"),
    (dict(variant="nope"), "unknown variant 'nope'"),
])
def test_bad_architecture_fields_are_one_line_errors(kw, message):
    with pytest.raises(FitError, match=message):
        SAEConfig(**kw)


def test_widths_that_cannot_hold_k_or_the_prefixes_are_refused():
    with pytest.raises(FitError, match="--k 64 is more than the 10 latents"):
        SAE(SAEConfig(variant="topk"), 10)
    with pytest.raises(FitError, match="--prefixes end at 30, beyond the 10 latents"):
        SAE(SAEConfig(variant="matryoshka", k=2, prefixes=(4, 30)), 10)
    assert SAE(SAEConfig(variant="matryoshka", k=2, prefixes=(4, 8)), 10).group_bounds == [(0, 4), (4, 8), (8, 10)]
