"""The browser's one-pass statistics against brute force over the whole matrix, and its token decoding."""

import itertools
import json

import numpy as np
import pytest
import torch
from tiny_model import build_tokenizer

from pipeline.browse.decode import REPLACEMENT, token_texts, vocab_texts
from pipeline.browse.logit_lens import logit_lens
from pipeline.browse.site import LEVELS, js_data, levels
from pipeline.browse.stats import FeatureStats, LogBins, StatsConfig
from pipeline.browse.topk import MISSING, TopK, Window
from pipeline.evaluate.metrics import ReconstructionAccumulator

RPC = 13  # rows per context
WINDOW = Window(before=5, after=3)


def latents(rows: int, features: int, seed: int = 0) -> torch.Tensor:
    """ReLU latents: mostly zero, some features very sparse (fewer firing rows than k)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.relu(torch.randn(rows, features, generator=g) * 2 - 1) * torch.rand(features, generator=g) * 10
    z[:, 0] = 0  # dead
    z[:, 1] = 0
    z[torch.randperm(rows, generator=g)[:3], 1] = torch.tensor([1.0, 2.0, 3.0])  # fires on 3 rows only
    return z


def blocks(start: int, stop: int, contexts_per_block: int):
    """Context-aligned blocks over [start, stop), the last context possibly cut short, as the scan makes them."""
    step = contexts_per_block * RPC
    for lo in range(start, stop, step):
        yield lo, min(lo + step, stop)


def brute_window(z: torch.Tensor, start: int, row: int, f: int) -> list[float]:
    """Feature f around global row `row` in the full matrix (rows [start, start + len(z))), within its context."""
    ctx = row // RPC
    out = []
    for d in range(-WINDOW.before, WINDOW.after + 1):
        r = row + d
        inside = r // RPC == ctx and start <= r < start + len(z)
        out.append(float(z[r - start, f]) if inside else MISSING)
    return out


def accumulate(z: torch.Tensor, start: int, contexts_per_block: int, k: int = 7, seed: int = 0,
               bounds=None) -> FeatureStats:
    stats = FeatureStats(z.shape[1], bounds or [(0, z.shape[1])], StatsConfig(k=k, window=WINDOW))
    g = torch.Generator().manual_seed(seed)
    for lo, hi in blocks(start, start + len(z), contexts_per_block):
        stats.add(z[lo - start : hi - start], lo, RPC, g)
    return stats.cpu()


@pytest.mark.parametrize("contexts_per_block", [1, 3, 100])
def test_topk_matches_brute_force(contexts_per_block):
    start = 5 * RPC  # held-out rows start at a context boundary, not at row 0
    z = latents(40 * RPC + 6, 23)  # a short last context
    stats = accumulate(z, start, contexts_per_block)
    k = stats.cfg.k
    full = torch.topk(z, k, dim=0)
    for f in range(z.shape[1]):
        want = [float(v) for v in full.values[:, f] if v > 0]
        got = stats.topk.feature(f)
        assert [v for _, v, _ in got] == want
        rows = [r for r, _, _ in got]
        assert len(set(rows)) == len(rows)
        for row, value, window in got:
            assert float(z[row - start, f]) == value
            assert window == brute_window(z, start, row, f)
    assert stats.topk.feature(0) == [] and len(stats.topk.feature(1)) == 3


def test_ties_keep_the_largest_values_in_a_fixed_order():
    z = torch.randint(0, 4, (30 * RPC, 9)).float()  # many equal values
    a = accumulate(z, 0, 2, k=10)
    b = accumulate(z, 0, 7, k=10)
    for f in range(9):
        want = sorted(z[:, f].tolist(), reverse=True)[:10]
        got = a.topk.feature(f)
        assert [v for _, v, _ in got] == [v for v in want if v > 0]
        assert [v for _, v, _ in b.topk.feature(f)] == [v for _, v, _ in got]
        # equal values are listed by row
        for (r1, v1, _), (r2, v2, _) in itertools.pairwise(got):
            assert v1 > v2 or r1 < r2


def test_one_topk_block_smaller_than_k():
    top = TopK(4, 10, WINDOW)
    z = latents(RPC, 4, seed=3)
    top.add(z, 0, RPC)
    for f in range(4):
        assert [v for _, v, _ in top.feature(f)] == sorted([v for v in z[:, f].tolist() if v > 0], reverse=True)


def test_histograms_densities_and_groups_match_numpy():
    start = 2 * RPC
    z = latents(25 * RPC, 17, seed=1)
    z[5, 3] = 1e-7  # below the first bin edge
    z[6, 3] = 1e7  # above the last
    bounds = [(0, 6), (6, 12), (12, 17)]
    stats = accumulate(z, start, 4, bounds=bounds)
    zn = z.numpy()
    bins = LogBins()
    edges = bins.edges()
    for f in range(17):
        vals = np.clip(zn[zn[:, f] > 0, f], edges[0], edges[-1] * 0.999)
        want, _ = np.histogram(vals, bins=edges)
        assert stats.histograms[f].tolist() == want.tolist(), f
    np.testing.assert_allclose(stats.density, (zn > 0).mean(axis=0))
    fired = (zn > 0).sum(axis=0)
    np.testing.assert_allclose(stats.mean_when_active, np.where(fired > 0, zn.sum(0) / np.maximum(fired, 1), 0),
                               rtol=1e-6)
    np.testing.assert_array_equal(stats.max, zn.max(axis=0))
    # the same group statistics `pipeline evaluate` writes
    acc = ReconstructionAccumulator(17, bounds)
    x = torch.zeros(len(z), 2)
    acc.add(x, x, x, x, z, torch.zeros(17))
    for mine, theirs in zip([g.to_dict() for g in stats.groups()], acc.result().to_dict()["groups"], strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-6), key


def test_random_examples_come_from_their_bin_and_are_uniform():
    start = RPC
    z = latents(30 * RPC, 11, seed=2)
    stats = accumulate(z, start, 3)
    bins = LogBins()
    hist = stats.histograms
    for f in range(11):
        for b in range(bins.n):
            ex = stats.samples.example(b, f)
            assert (ex is None) == (hist[f, b] == 0)
            if ex is not None:
                row, value, window = ex
                assert float(z[row - start, f]) == value
                assert int(bins.index(torch.tensor([value]))[0]) == b
                assert window == brute_window(z, start, row, f)
    # three rows in one bin, in different blocks: each is drawn about a third of the time
    z = torch.zeros(9 * RPC, 1)
    z[[2, 4 * RPC + 1, 8 * RPC + 5], 0] = 1.0
    counts: dict[int, int] = {}
    for seed in range(300):
        row = accumulate(z, 0, 3, seed=seed).samples.example(int(bins.index(torch.tensor([1.0]))[0]), 0)[0]
        counts[row] = counts.get(row, 0) + 1
    assert sorted(counts) == [2, 4 * RPC + 1, 8 * RPC + 5]
    assert all(60 < c < 140 for c in counts.values()), counts


def test_quantile_examples_pick_the_bins_holding_each_quantile():
    z = torch.zeros(10 * RPC, 1)
    z[: 9 * RPC, 0] = 0.01  # 90% of firing rows around 0.01
    z[9 * RPC :, 0] = 10.0  # the top 10% around 10
    stats = accumulate(z, 0, 2)
    got = stats.quantile_examples(0, (0.1, 0.5, 0.95))
    assert [(q, v) for q, _, v, _ in got] == [(0.1, pytest.approx(0.01)), (0.95, 10.0)]  # 0.1 and 0.5 share a bin


def test_logit_lens_matches_the_full_product():
    g = torch.Generator().manual_seed(0)
    W_U, dirs = torch.randn(1000, 16, generator=g), torch.randn(7, 16, generator=g)
    lens = logit_lens(W_U, dirs, top=10, vocab_chunk=128)
    full = dirs @ W_U.T
    top, bottom = torch.topk(full, 10, dim=1), torch.topk(-full, 10, dim=1)
    assert torch.equal(lens.promoted_ids, top.indices) and torch.allclose(lens.promoted, top.values, atol=1e-5)
    assert torch.equal(lens.suppressed_ids, bottom.indices)
    assert torch.allclose(lens.suppressed, -bottom.values, atol=1e-5)


TEXT = "Héllo wörld 😀 中文字 café <script>alert(1)</script>\n\nAnd the ünïcode"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_multibyte_characters_decode_in_context(tokenizer):
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    singly = [tokenizer.decode([i]) for i in ids]
    assert any(REPLACEMENT in t for t in singly)  # the tiny BPE splits these characters over byte tokens
    (texts,) = token_texts(tokenizer, [ids])
    assert len(texts) == len(ids)
    assert "".join(texts) == TEXT
    assert not any(REPLACEMENT in t for t in texts)
    for ch in ("é", "😀", "中", "文", "字", "ü", "ï"):
        assert ch in texts  # a character belongs whole to the token that completes it
    # a context cut in the middle of a character: the orphan bytes show as nothing, the rest is intact
    cut = next(i for i in range(len(ids)) if singly[i] == REPLACEMENT and singly[i + 1] == REPLACEMENT) + 1
    (tail,) = token_texts(tokenizer, [ids[cut:]])
    assert "".join(tail) == tokenizer.decode(ids[cut:]).lstrip(REPLACEMENT)


def test_a_context_ending_inside_a_character_keeps_the_replacement(tokenizer):
    ids = tokenizer("ab😀", add_special_tokens=False)["input_ids"]
    (texts,) = token_texts(tokenizer, [ids[:-1]])
    assert texts[-1].endswith(REPLACEMENT)


def test_vocab_texts_show_byte_pieces_by_name(tokenizer):
    ids = tokenizer("é", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2
    assert all(t and REPLACEMENT not in t for t in vocab_texts(tokenizer, ids))


def test_data_files_escape_markup_and_round_trip():
    obj = {"t": ["</script><script>alert(1)</script>", "\u2028", "é😀"], "x": float("nan")}
    text = js_data("data/x.js", obj)
    assert "<" not in text and "\u2028" not in text
    assert text.startswith('BROWSE.put("data/x.js",') and text.endswith(");\n")
    back = json.loads(text[len('BROWSE.put("data/x.js",') : -3])
    assert back == {"t": obj["t"], "x": None}


def test_shading_levels():
    lo, shade = levels([MISSING, MISSING, 0.0, 0.001, 5.0, 10.0, MISSING], 10.0)
    assert lo == 2
    assert shade == LEVELS[0] + LEVELS[1] + LEVELS[32] + LEVELS[63]
