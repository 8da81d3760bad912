"""Context geometry of a store: its rows per context, a context's rows and the token ids the LM saw."""

import json

import numpy as np
import pytest
from direct_store import make_meta, random_rows, write_store

from store.format import ContextInfo, ceil_div
from store.reader import open_store


def test_ceil_div():
    assert [ceil_div(a, 4) for a in range(9)] == [0, 1, 1, 1, 1, 2, 2, 2, 2]


def _hand_input_ids(st, contexts):
    """The token ids as evaluation rebuilt them by hand before the store knew its contexts."""
    ctx = st.meta.context
    per_ctx, first_pos, length = ctx.rows_per_context, ctx.first_position, ctx.length
    start, stop = 0, st.n_rows
    tokens = st.tokens(start, stop)
    ids = np.full((len(contexts), length), st.meta.tokenizer.pad_token_id or 0, dtype=np.int64)
    n_real = []
    for i, c in enumerate(contexts):
        lo, hi = c * per_ctx - start, min((c + 1) * per_ctx, stop) - start
        ids[i, first_pos : first_pos + hi - lo] = tokens[lo:hi]
        ids[i, 0] = st.meta.tokenizer.bos_token_id
        n_real.append(first_pos + hi - lo)
    return ids, np.array(n_real)


@pytest.mark.parametrize("include_bos", [False, True])
def test_context_geometry_matches_the_hand_computation(tmp_path, include_bos):
    # 1000 rows in contexts of 16 tokens: 15 or 16 rows each, so the last context is short either way
    meta = make_meta(n_rows=1000, d=8, chunk_rows=128, context=ContextInfo(16, include_bos))
    write_store(str(tmp_path / "s.zarr"), meta, random_rows(1000, 8))
    st = open_store(str(tmp_path / "s.zarr"))
    per_ctx = 16 if include_bos else 15
    assert st.rows_per_context == per_ctx
    assert st.n_contexts == -(-1000 // per_ctx)
    assert st.context_of_row(0) == 0 and st.context_of_row(per_ctx) == 1 and st.context_of_row(999) == 999 // per_ctx
    assert st.contexts_between(per_ctx - 1, 2 * per_ctx + 1) == range(0, 3)
    assert st.contexts_between(per_ctx, 2 * per_ctx) == range(1, 2)
    assert st.contexts_between(5, 5) == range(0)
    last = st.n_contexts - 1
    assert st.context_rows(1) == (per_ctx, 2 * per_ctx)
    assert st.context_rows(last) == (last * per_ctx, 1000)
    np.testing.assert_array_equal(st.context_ids(*st.context_rows(last)), last)

    contexts = [0, 3, last - 1, last]
    ids, n_real = st.context_input_ids(contexts)
    want_ids, want_n_real = _hand_input_ids(st, contexts)
    np.testing.assert_array_equal(ids, want_ids)
    np.testing.assert_array_equal(n_real, want_n_real)
    assert ids.dtype == np.int64 and ids.shape == (4, 16)
    assert n_real[-1] < 16 and (ids[-1, n_real[-1] :] == 0).all()  # the short last context is padded
    assert (ids[:, 0] == meta.tokenizer.bos_token_id).all()
    padded, _ = st.context_input_ids([last], pad_id=-5)
    assert (padded[0, n_real[-1] :] == -5).all()


def test_store_identity_is_the_meta_identity_plus_its_rows(tmp_path):
    meta = make_meta(n_rows=1000, d=8, chunk_rows=128)
    write_store(str(tmp_path / "s.zarr"), meta, random_rows(1000, 8))
    identity = open_store(str(tmp_path / "s.zarr")).identity()
    assert json.loads(json.dumps(identity)) == identity
    assert identity == {**meta.identity(), "d_model": 8, "n_rows": 1000}
    assert identity["dataset"] == "json" and identity["data_files"] == ["api-written.jsonl"]
    for key in ("model", "model_fingerprint", "layer", "context_length", "include_bos"):
        assert key in identity
