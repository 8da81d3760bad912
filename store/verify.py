"""`pipeline store verify`: check a store end to end and say what is wrong with it.

Checks every metadata document (the root attributes against their schema and the checksum recorded at
finalisation, each array's own zarr.json against the format and against its consolidated copy), reads every
chunk of every array (checksums catch corruption; a missing chunk is named), counts NaN/Inf, recomputes every
chunk's statistics, and checks the per-row metadata against the layout rules. Every problem is one line that
names the file, or the array and chunk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from store import dtypes, truth
from store import format as fmt
from store.errors import StoreError, StoreNotFoundError
from store.layout import (
    ROOT_DOC,
    RowMap,
    array_doc_problems,
    consolidated_docs,
    doc_key,
    expected_array_docs,
    groups,
    metadata_checksum,
    read_doc,
    read_root,
)
from store.location import StoreLocation
from store.manifest import SEAL
from store.reader import ActivationStore, chunk_set_problems, open_store
from store.stats import merge_all, moments_of

MAX_LISTED = 10
"""Problems of one kind listed one by one before the rest are only counted."""


@dataclass
class VerifyReport:
    store: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    """Checks that passed, in the order run."""
    chunks_read: int = 0
    bytes_read: int = 0
    nan_count: int = 0
    inf_count: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict:
        return {**self.__dict__, "ok": self.ok}


def verify_store(
    url: str | StoreLocation,
    *,
    partial: bool = False,
    storage_options: dict | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    started = time.monotonic()
    report = VerifyReport(str(url))
    try:
        store = open_store(url, partial=partial, storage_options=storage_options, allow_unsealed=True,
                           check_chunk_set=False)
        if store.partial:
            report.warnings.append(f"store is incomplete: checked the first {store.n_rows:,} rows only")
        else:
            report.checks.append("harvest complete")
        _check_metadata(store, report)
        documents_ok = not report.errors
        if store.manifest is not None:
            _listed(report, chunk_set_problems(store.location, store.manifest, deep=True), "stray or missing chunks")
        if documents_ok:
            _check_chunks(store, report, on_progress)
            _check_row_metadata(store, report)
            _check_global_stats(store, report)
            if store.synthetic:
                _check_truth(store, report)
    except StoreNotFoundError:
        raise  # nothing to check is a wrong path, not a damaged store: one line, like every other command
    except StoreError as exc:
        report.errors.append(str(exc))
    report.errors = list(dict.fromkeys(report.errors))  # one line per fault, however many checks met it
    report.seconds = time.monotonic() - started
    return report


def _check_metadata(store: ActivationStore, report: VerifyReport) -> None:
    """Every metadata document: one line per damaged file, naming it."""
    location, meta = store.location, store.meta
    root = read_root(location)
    consolidated = consolidated_docs(root) if root is not None else None
    expected = expected_array_docs(meta)
    problems = []
    node_groups = groups(meta)
    for name in [*expected, *node_groups]:
        key = doc_key(name)
        try:
            doc = read_doc(location, key)
        except StoreError as exc:
            problems.append(str(exc))
            continue
        if doc is None:
            problems.append(f"{location}/{key} is missing: the store is damaged; re-harvest it")
            continue
        found = []
        if name in expected:
            found = array_doc_problems(name, doc, expected[name], f"{location}/{key}", shape=meta.complete)
        elif doc.get("node_type") != "group" or doc.get("zarr_format") != 3:
            found = [f"{location}/{key}: is not the metadata of a Zarr v3 group: restore it, or re-harvest"]
        if not found and consolidated is not None:
            copy = consolidated.get(name)
            if name in node_groups and copy is not None:
                copy = {k: v for k, v in copy.items() if k != "consolidated_metadata"}
            if copy is None:
                found = [f"{location}/{ROOT_DOC}: the consolidated metadata lacks '{name}': restore the file, or "
                         "re-harvest"]
            elif copy != doc:
                found = [f"{location}/{key} differs from its consolidated copy in {location}/{ROOT_DOC} (one was "
                         "edited or is corrupt): restore it, or re-harvest"]
        problems.extend(found[:1])  # one line per file: the first field that is wrong names it
    sealed = store.manifest is not None
    if meta.complete and not sealed:
        if meta.format_version >= fmt.FORMAT_VERSION:
            problems.append(f"{location}/{ROOT_DOC} has lost the seal ({SEAL}) its format version carries (removed "
                            "since it was finalised): `pipeline store finalize --reseal` seals the store as it is now")
        else:
            report.warnings.append(f"not sealed: finalised by an older version of this tool (store format "
                                   f"{meta.format_version}), so fit and evaluate read it only with --allow-unsealed; "
                                   f"`pipeline store finalize {location}` seals it")
        if consolidated is None:
            report.warnings.append("metadata is not consolidated: run `pipeline store finalize` to add it")
        elif meta.metadata_sha256 is not None and (
                metadata_checksum(root["attributes"], consolidated) != meta.metadata_sha256):
            problems.append(
                f"{location}/{ROOT_DOC}: its attributes or consolidated metadata do not match the checksum "
                "recorded at finalisation (edited or corrupt): restore the file, or re-harvest"
            )
    if meta.complete and location.exists(fmt.WORK_DIR):
        report.warnings.append(
            f"the harvest's bookkeeping ({fmt.WORK_DIR}/) was left behind: run `pipeline store finalize` to tidy it"
        )
    report.errors.extend(problems)
    if not problems:
        report.checks.append(
            f"metadata documents match format v{meta.format_version} and their consolidated copies"
            + (", and the manifest sealed at finalisation" if sealed else
               ", and the checksum recorded at finalisation" if meta.metadata_sha256 and consolidated else "")
        )


def _listed(report: VerifyReport, problems: list[str], what: str) -> None:
    report.errors.extend(problems[:MAX_LISTED])
    if len(problems) > MAX_LISTED:
        report.errors.append(f"... and {len(problems) - MAX_LISTED} more {what}")


def _check_chunks(
    store: ActivationStore, report: VerifyReport, on_progress: Callable[[int, int], None] | None
) -> None:
    bad_chunks, bad_stat_chunks, bad_stats = [], [], []
    for j in range(store.n_chunks):
        try:
            mean_j, m2_j = (a[0] for a in store.chunk_moments(j, j + 1))
        except StoreError as exc:
            bad_stat_chunks.append(str(exc))
            mean_j = m2_j = None
        try:
            raw = store.read_chunk_raw(j)
        except StoreError as exc:
            bad_chunks.append(str(exc))
            continue
        report.chunks_read += 1
        report.bytes_read += raw.nbytes
        acts = dtypes.decode_numpy(raw, store.meta.dtype)
        nan = int(np.isnan(acts).sum())
        inf = int(np.isinf(acts).sum())
        report.nan_count += nan
        report.inf_count += inf
        if nan == inf == 0 and mean_j is not None:
            moments = moments_of(acts)
            if not (
                np.allclose(moments.mean, mean_j, rtol=1e-9, atol=1e-9)
                and np.allclose(moments.m2, m2_j, rtol=1e-7, atol=1e-6)
            ):
                bad_stats.append(j)
        if on_progress is not None:
            on_progress(j + 1, store.n_chunks)
    _listed(report, bad_chunks, "unreadable activation chunks")
    _listed(report, bad_stat_chunks, "unreadable statistics chunks")
    if report.nan_count or report.inf_count:
        report.errors.append(f"activations hold {report.nan_count:,} NaN and {report.inf_count:,} Inf values")
    if bad_stats:
        listed = ", ".join(map(str, bad_stats[:MAX_LISTED]))
        report.errors.append(f"stored statistics disagree with the data in chunk(s) {listed}")
    if not bad_chunks:
        report.checks.append(f"all {store.n_chunks} activation chunks read back and pass their checksums")
    if not bad_stat_chunks:
        report.checks.append(f"all {2 * store.n_chunks} per-chunk statistics chunks read back and pass their checksums")
    if not (bad_stats or bad_chunks or bad_stat_chunks or report.nan_count or report.inf_count):
        report.checks.append("no NaN or Inf; per-chunk statistics match the data")


def _check_row_metadata(store: ActivationStore, report: VerifyReport) -> None:
    rows = RowMap.of(store.meta, store.n_rows)
    vocab = store.meta.tokenizer.vocab_size
    unreadable, problems = [], []
    # One chunk at a time, so that every damaged chunk of every array is named, not only the first.
    for start in range(0, store.n_rows, store.chunk_rows):
        stop = min(start + store.chunk_rows, store.n_rows)
        got = {}
        for name, read in ((fmt.TOKENS, store.tokens), (fmt.CONTEXT_IDS, store.context_ids),
                           (fmt.POSITIONS, store.positions)):
            try:
                got[name] = read(start, stop)
            except StoreError as exc:
                unreadable.append(str(exc))
        if len(got) < 3:
            continue
        tokens, ctx, pos = got[fmt.TOKENS], got[fmt.CONTEXT_IDS], got[fmt.POSITIONS]
        j = start // store.chunk_rows
        want_ctx, want_pos = rows.ids_and_positions(start, stop)
        if tokens.min(initial=0) < 0 or tokens.max(initial=0) >= vocab:
            problems.append(f"tokens chunk {j} (rows {start}..{stop}): token ids outside the vocabulary 0..{vocab - 1}")
        if not np.array_equal(ctx, want_ctx):
            problems.append(f"context_ids chunk {j} (rows {start}..{stop}): context ids do not follow the layout")
        if not np.array_equal(pos, want_pos):
            problems.append(f"positions chunk {j} (rows {start}..{stop}): positions do not follow the layout")
    _listed(report, unreadable, "unreadable token, context id or position chunks")
    _listed(report, problems, "chunks whose per-row metadata is wrong")
    if not (unreadable or problems):
        report.checks.append("token, context id and position chunks pass their checksums; token ids in vocabulary; "
                             "context ids and positions follow the layout")


def _check_global_stats(store: ActivationStore, report: VerifyReport) -> None:
    if not store.meta.complete:
        return
    try:
        merged = merge_all(store.chunk_row_counts(), *store.chunk_moments())
        mean, var = store.read_array(fmt.MEAN, 0, store.d_model), store.read_array(fmt.VAR, 0, store.d_model)
    except StoreError as exc:
        report.errors.append(str(exc))
        return
    if np.allclose(merged.mean, mean, rtol=1e-9, atol=1e-9) and np.allclose(merged.var, var, rtol=1e-9, atol=1e-9):
        report.checks.append("global mean and variance match the per-chunk statistics")
    else:
        report.errors.append("stats/mean or stats/var disagree with the per-chunk statistics: run finalize again")


def _check_truth(store: ActivationStore, report: VerifyReport) -> None:
    """A synthetic store's ground truth: the model matches its digest, every row's list of active features is
    well formed and obeys the forest, and every stored row is its features' sum (to the stored dtype's rounding)."""
    try:
        gt = store.ground_truth()
    except StoreError as exc:
        report.errors.append(str(exc))
        return
    unreadable, problems, mismatched = [], [], []
    for start in range(0, store.n_rows, store.chunk_rows):
        stop = min(start + store.chunk_rows, store.n_rows)
        j = start // store.chunk_rows
        try:
            ids, coefs = store.truth_rows(start, stop)
            acts = store.read_rows(start, stop)
        except StoreError as exc:
            unreadable.append(str(exc))
            continue
        found = truth.list_problems(ids, coefs, gt)
        if found:
            problems.append(f"{truth.ROW_FEATURES} chunk {j} (rows {start}..{stop}): {'; '.join(found)}")
            continue
        expected = truth.rows_of(ids, coefs, gt.dictionary_GD, gt.bias_D)
        stored = dtypes.decode(dtypes.encode(expected, store.meta.dtype), store.meta.dtype)
        # Sampled on another device the float32 sum may round the other way: one unit of the stored dtype's last place.
        ulp = stored.abs() * torch.finfo(dtypes.TORCH_DTYPES[store.meta.dtype]).eps + 1e-6
        bad = ((acts - stored).abs() > ulp).any(dim=1)
        if bool(bad.any()):
            mismatched.append(f"activations chunk {j}: row {start + int(bad.nonzero()[0, 0])} is not the sum of its "
                              f"ground-truth features ({int(bad.sum())} such rows)")
    _listed(report, unreadable, "unreadable ground-truth chunks")
    _listed(report, problems, "chunks whose ground truth breaks the model")
    _listed(report, mismatched, "chunks whose rows disagree with their ground truth")
    if not (unreadable or problems or mismatched):
        report.checks.append(f"ground truth: the model matches its digest ({gt.n_features:,} features); every row's "
                             "active features obey the forest and sum to the stored row")
