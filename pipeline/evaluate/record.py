"""The evaluation record: what `pipeline evaluate` writes to RUN/eval.json, and what `report` and `browse` read.

One dataclass per JSON object and one docstring per field (docs/metrics.md defines each metric in words).
Reading is strict: an unknown or a missing field is one PipelineError line, not a KeyError later on. The JSON
Schema in docs/eval-schema.json is generated from these classes:
``python -m pipeline.evaluate.record > docs/eval-schema.json``.

Fields whose default is ``None`` are optional: measured only sometimes (the LM passes, skipped with --no-kl),
left out of eval.json when not measured. A field's ``title`` (metadata) is the short label the browser shows.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import PipelineError
from store.configs import field_docs
from store.files import write_json_atomic
from store.provenance import Provenance

EVAL_SCHEMA = 2
"""eval.json's schema version: 2 added ``schema_version``, ``provenance`` and ``evaluation``."""
READABLE_EVAL_SCHEMAS = (1, 2)
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "eval-schema.json"
REGENERATE = "python -m pipeline.evaluate.record > docs/eval-schema.json"

R = TypeVar("R", bound="Record")


def _title(title: str, unit: str | None = None) -> Any:
    """A field with a short display label (and a unit the browser formats by, e.g. 'fraction' as a percent)."""
    return field(metadata={"title": title, **({"unit": unit} if unit else {})})


def _optional_title(title: str) -> Any:
    return field(default=None, metadata={"title": title})


class Record:
    """Strict conversion of a record dataclass to and from its JSON object."""

    def field_values(self) -> dict[str, Any]:
        """Field name -> value, nested records left as they are (for building one record from another)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: nested records as objects, optional fields left out where not measured."""
        return {f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if not (f.default is None and getattr(self, f.name) is None)}

    @classmethod
    def from_dict(cls: type[R], obj: Any, where: str) -> R:
        """The record of a JSON object; ``where`` names it in errors (a file, then the path to the field)."""
        return _build(cls, obj, where)


def _build(cls: type, obj: Any, where: str) -> Any:
    """Dataclass ``cls`` (a record, or a part another module owns such as the provenance) from a JSON object,
    strictly."""
    if not isinstance(obj, dict):
        raise PipelineError(f"{where} is not a JSON object: rerun `pipeline evaluate`")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - set(known))
    missing = sorted(name for name, f in known.items() if name not in obj and _required(f))
    if unknown or missing:
        problems = ([f"unknown field(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"no field(s) {', '.join(missing)}"] if missing else [])
        raise PipelineError(f"{where} has {' and '.join(problems)}: it was written by another version of "
                            "`pipeline evaluate`; rerun it")
    hints = _hints(cls)
    return cls(**{name: _from_json(hints[name], value, f"{where}: {name}") for name, value in obj.items()})


@dataclass(frozen=True, kw_only=True)
class GroupStats(Record):
    """One latent group's statistics over the held-out rows (the baseline is one group)."""

    group: int
    """The group's number, 1 first; its L1 weight grows with it."""
    features: int
    """Latents in the group."""
    live: int = _title("live")
    """Features of the group that fired on at least one held-out row."""
    active: int = _title("active")
    """Features of the group whose mean activation exceeds 1e-4 (the paper's definition)."""
    token_rate: float = _title("activation rate", "fraction")
    """Fraction of held-out rows on which at least one feature of the group fires."""
    feature_density: float = _title("feature density", "fraction")
    """Mean over the group's features of the fraction of held-out rows each fires on."""
    intensity: float = _title("intensity")
    """Mean activation of the group's features where they fire."""


@dataclass(frozen=True, kw_only=True)
class StoreRecord(Record):
    """The store the run was evaluated on: its identity as the run's config.json records it (runs trained before
    the identity grew lack the optional fields), and the rows evaluated."""

    url: str
    """Where the store was read (a path or fsspec URL)."""
    model: str
    """The LM the store was harvested from (hub id or folder)."""
    model_fingerprint: str
    """Fingerprint of the LM's embedding weights, to refuse another model."""
    layer: int
    """Decoder layer whose output the store holds."""
    d_model: int
    """Width of an activation row."""
    dataset: str
    """The text data set the store was harvested from (hub id, or json/text/parquet for local files)."""
    data_files: list[str] | None
    """The data set's local files (null for a hub data set)."""
    context_length: int
    """Tokens per context, BOS included."""
    include_bos: bool
    """Whether the store holds the BOS position's row."""
    n_rows: int
    """Rows (tokens) in the store when the run was trained."""
    model_revision: str | None = None
    """The LM's hub commit (absent for a local model)."""
    dataset_config: str | None = None
    """The data set's configuration name, if any."""
    dataset_label: str | None = None
    """The data set as the user named it: the file or folder given, or the hub id with its config (absent in
    records of version 1, which name it by ``dataset`` and ``data_files``)."""
    dataset_split: str | None = None
    """The data set's split."""
    text_field: str | None = None
    """The data set's text column."""
    tokenizer: str | None = None
    """The tokenizer the store was harvested with."""
    dtype: str | None = None
    """The stored activations' dtype."""
    compute_dtype: str | None = None
    """The dtype the LM ran in while harvesting."""
    batch_size: int | None = None
    """Contexts per LM forward pass while harvesting."""
    tokens: int | None = None
    """Tokens the harvest asked for."""
    chunk_rows: int | None = None
    """Rows per store chunk."""
    model_weights: str | None = None
    """Content digest of every model and tokenizer file (a local model folder); None for a hub id, whose
    revision identifies it."""
    data_content: list[str] | None = None
    """Content digest of each local data file."""
    synthetic_model: str | None = None
    """A synthetic store's model, by content digest (absent for an LM's store)."""
    synthetic_seed: int | None = None
    """A synthetic store's row-stream seed."""
    synthetic_first_row: int | None = None
    """The stream row a synthetic store's row 0 is."""
    synthetic_sampler: str | None = None
    """The sampler that drew a synthetic store's rows (fast or sae-lens)."""
    synthetic_device: str | None = None
    """The device type a synthetic store's rows were drawn on."""
    synthetic_slots: int | None = None
    """Width of a synthetic store's per-row lists of active features."""
    architecture: str
    """The LM's Transformers class name, e.g. Gemma2ForCausalLM."""
    description: str
    """One line describing the store (model, layer, tokens, data set)."""
    tokens_total: int
    """Rows (tokens) in the store when it was evaluated."""
    heldout_rows: list[int]
    """[start, stop): the held-out rows evaluated (the last contexts, never trained on)."""


@dataclass(frozen=True, kw_only=True)
class TrainRecord(Record):
    """What the run's training.json says of its training."""

    steps: int
    """Optimiser steps taken."""
    tokens: int
    """Training rows seen (steps x batch size)."""
    sae_seconds: float
    """The SAE's compute (forward, backward, optimiser step) summed over its run, in seconds; for an SAE trained
    in a stack of several (``stack_size`` > 1), an equal share of the stack's compute, not its own cost."""
    stack_size: int = 1
    """SAEs trained together with it as one batched computation (fit's stacks; 1: trained alone, ``--no-stack``
    or the only SAE of its shape). Training times compare SAEs only where this is 1."""
    final: dict[str, Any]
    """The last line of the run's metrics.jsonl (docs/fit.md), {} when none was logged."""


@dataclass(frozen=True, kw_only=True)
class Reconstruction(Record):
    """Reconstruction, sparsity and feature use over the held-out rows."""

    rows: int
    """Held-out rows evaluated (R)."""
    mse: float = _title("MSE (normalised)")
    """(1/R) sum ||x_n - x_hat_n||^2 in the SAE's normalised space: the training objective's reconstruction term
    (Table 1's training loss)."""
    mse_raw: float = _title("MSE (activation space)")
    """(1/R) sum ||x - x_hat||^2 in activation space."""
    explained_variance: float = _title("explained variance")
    """1 - sum ||x - x_hat||^2 / sum ||x - mean x||^2 in activation space."""
    explained_variance_normalised: float = _title("explained variance (normalised)")
    """The same in the SAE's normalised space."""
    l0: float = _title("L0")
    """Mean number of latents above zero per row."""
    penalty: float = _title("penalty")
    """(1/R) sum_j w_j z_j: the sparsity penalty per row, each latent weighted by its group's L1 weight."""
    active_features: int = _title("active features")
    """Latents whose mean activation over the rows exceeds 1e-4 (the paper's definition)."""
    dead_features: int = _title("dead features")
    """Latents that never fire on the held-out rows."""
    groups: list[GroupStats]
    """Per latent group, in order."""
    feature_density: list[float]
    """Per latent: the fraction of held-out rows on which it fires."""
    feature_mean_activation: list[float]
    """Per latent: its mean activation over all held-out rows (zeros included)."""


@dataclass(frozen=True, kw_only=True)
class Behaviour(Record):
    """The LM's next-token predictions with the SAE spliced in, over the held-out contexts."""

    kl: float | None = _optional_title("KL (nats)")
    """Mean over replaced positions of KL(p_clean || p_spliced), in nats."""
    ce_clean: float | None = _optional_title("CE, clean")
    """Mean next-token cross-entropy of the clean LM over replaced positions with a next token, in nats."""
    ce_spliced: float | None = _optional_title("CE, SAE spliced in")
    """The same with the SAE's reconstruction replacing the layer's output."""
    ce_zero_ablated: float | None = _optional_title("CE, zero-ablated")
    """The same with the layer's output replaced by zeros."""
    ce_recovered: float | None = _optional_title("CE recovered")
    """(CE_zero - CE_spliced) / (CE_zero - CE_clean): 1 = as good as the clean LM, 0 = as bad as zeroing."""
    kl_tokens: int | None = None
    """Replaced positions the KL is averaged over."""
    ce_tokens: int | None = None
    """Replaced positions with a next token, the CEs are averaged over."""
    kl_contexts: int | None = None
    """Held-out contexts the LM ran over (all, or the first --kl-contexts)."""


@dataclass(frozen=True, kw_only=True)
class AbsorptionLetter(Record):
    """One first letter that qualified for the absorption metric (its probe's test F1 above the bar)."""

    letter: str
    """The letter, lower case."""
    test_words: int
    """Test-split words that start with it."""
    probe_f1: float
    """F1 of the letter's logistic-regression probe on the test words (logit > 0 predicts the letter)."""
    probe_true_positives: int
    """Test words of the letter on which the probe fires: the words the absorption rates are fractions of."""
    main_latents: list[int]
    """The letter's main latents: the k-sparse probe's latents at the k the F1-jump rule stopped at."""
    main_latents_f1: float
    """Test F1 of the k-sparse probe on those main latents."""
    full_absorptions: int
    """Probe true positives fully absorbed (main latents silent, one aligned latent carrying the projection)."""
    full_absorption_rate: float = _title("full absorption", "fraction")
    """full_absorptions / probe_true_positives."""
    absorption_fraction: float = _title("absorption fraction", "fraction")
    """Mean over the probe true positives of the absorption fraction (docs/metrics.md)."""


@dataclass(frozen=True, kw_only=True)
class AbsorptionExcluded(Record):
    """A letter left out of the absorption means, and why."""

    letter: str
    """The letter, lower case."""
    reason: str
    """Why it was left out (e.g. its probe's F1 is at or below the bar)."""
    test_words: int
    """Test-split words that start with it."""
    probe_f1: float
    """Its probe's test F1."""


DENSE_L0 = 200
"""Above this L0 an SAE is dense: absorption (latents taking over a feature's direction) means little there."""
WEAK_MAIN_LATENTS = 0.5
"""Main latents whose mean k-sparse F1 is below this fraction of the letters' mean probe F1 are weak."""


@dataclass(frozen=True, kw_only=True)
class AbsorptionRecord(Record):
    """Feature absorption on first-letter spelling (Chanin et al. 2024; SAEBench's absorption eval), in raw
    residual units (docs/metrics.md). Means are over the qualifying letters only."""

    mean_full_absorption: float | None = _optional_title("full absorption")
    """Mean over qualifying letters of the full-absorption rate (absent when no letter qualifies)."""
    mean_absorption_fraction: float | None = _optional_title("absorption fraction")
    """Mean over qualifying letters of the absorption fraction (absent when no letter qualifies)."""
    mean_main_latents: float | None = None
    """Mean over qualifying letters of the number of main latents (SAEBench's mean_num_split_features)."""
    mean_main_latents_f1: float | None = None
    """Mean over qualifying letters of the main latents' k-sparse probe F1 (not in SAEBench's output). Far below
    the letters' probe F1, the SAE has no latents for the first letters, and a high full-absorption rate then says
    the feature is missing rather than absorbed (docs/metrics.md)."""
    letters: list[AbsorptionLetter]
    """Per qualifying letter, a to z."""
    excluded_letters: list[AbsorptionExcluded]
    """Letters left out of the means, each with its reason: never dropped silently."""
    enough_letters: bool
    """Whether at least min_letters letters qualified (SAEBench refuses to score with fewer)."""
    min_letters: int
    """SAEBench's minimum number of qualifying letters (min_feats_for_eval)."""
    min_probe_f1: float
    """A letter qualifies when its probe's test F1 exceeds this (SAEBench's min_GT_probe_f1)."""
    sae_l0: float
    """The SAE's mean L0 on the test prompts' word positions: absorption means little for dense SAEs (L0 in
    the hundreds)."""
    model: str
    """The LM the prompts ran through (the store's)."""
    layer: int
    """Decoder layer whose output (the residual stream after it) the probe and the SAE read."""
    words: int
    """Vocabulary words used (train + test)."""
    train_words: int
    """Words the probe and the k-sparse probes were trained on."""
    test_words: int
    """Words the probe F1, the k-sparse F1 and the absorption were measured on."""
    vocabulary_words: int
    """Alphabetic single-token words in the tokenizer (SAEBench's vocabulary), before any subsampling."""
    words_file: str | None = None
    """The word list file passed, when the words were not drawn from the tokenizer."""
    seed: int
    """Seed of the word subsample, the train/test split, the in-context examples and the probes' training."""
    prompt_template: str
    """The prompt after the in-context examples, {word} standing for the word."""
    icl_examples: int
    """In-context examples before each prompt."""
    word_position: int
    """Position read, counted from the prompt's end (-1 is its last token): the word's last token."""
    probe_test_accuracy: float
    """26-way accuracy (argmax of the probe's logits) on the test words."""
    cache: str
    """The folder of the cached prompts, activations and probe this score was computed from."""
    seconds: float
    """Seconds scoring this SAE took (k-sparse probes and absorption), the cache's build excluded."""

    def weak_main_latents(self) -> str | None:
        """A caveat when the main latents barely predict their letters (mean k-sparse F1 below WEAK_MAIN_LATENTS of
        the letters' mean probe F1): the SAE then has no first-letter latents to absorb. None otherwise."""
        if not self.letters or self.mean_main_latents_f1 is None:
            return None
        probe = sum(r.probe_f1 for r in self.letters) / len(self.letters)
        if self.mean_main_latents_f1 >= WEAK_MAIN_LATENTS * probe:
            return None
        return (f"main latents' F1 {self.mean_main_latents_f1:.2f} against the probe's {probe:.2f}: the SAE has no "
                "first-letter latents to absorb, so full absorption here measures a missing feature")

    def caveats(self) -> list[str]:
        """What a reader of this SAE's figures needs to know: too few qualifying letters, a dense SAE, no letter
        latents (empty: none)."""
        out = [f"only {len(self.letters)} letters qualify (SAEBench asks {self.min_letters})"] if not (
            self.enough_letters) else []
        if self.sae_l0 > DENSE_L0:
            out.append(f"L0 {self.sae_l0:.0f} is dense: absorption means little")
        if (weak := self.weak_main_latents()) is not None:
            out.append(weak)
        return out


def absorption_caveat(measured: list[AbsorptionRecord]) -> tuple[str, str] | None:
    """Why these absorption records give no verdict, as (headline, detail), or None when they can. The claims
    table, the frontier verdict lines and the absorption plots all say it from here."""
    thin = [a for a in measured if not a.enough_letters]
    if thin:
        # SAEBench refuses to score below its minimum of qualifying letters; a verdict on a few letters' probes would
        # be read as the title's claim tested.
        return (f"only {min(len(a.letters) for a in thin)} of 26 letters' probes qualify",
                f"fewer than the {thin[0].min_letters} letters SAEBench asks for: measure with more words "
                "(--absorption-words) or the full vocabulary on a GPU")
    weak = [a for a in measured if a.weak_main_latents() is not None]
    if weak:
        # The rules count a word absorbed when the main latents are silent: with no letter latents they always are.
        return f"{len(weak)} of {len(measured)} SAEs without first-letter latents", weak[0].weak_main_latents()
    return None


@dataclass(frozen=True, kw_only=True)
class TruthPair(Record):
    """One (parent, child) pair of a synthetic store's true forest, its absorption scored (docs/metrics.md)."""

    parent: int
    """The parent true feature."""
    child: int
    """The child true feature."""
    depth: int
    """The parent's depth (0: a root)."""
    child_rows: int
    """Held-out rows with the child on (so the parent on too)."""
    control_rows: int
    """Held-out rows with the parent on and none of its children."""
    absorbed_with_child: float
    """Fraction of the child rows where the parent's latent is silent yet the other latents put at least 40% of the
    parent's coefficient along its direction."""
    absorbed_control: float
    """The same fraction over the control rows."""
    absorption: float = _title("absorption", "fraction")
    """absorbed_with_child - absorbed_control."""
    partial_absorption: float = _title("partial absorption", "fraction")
    """1 - the parent latent's mean share of the parent's coefficient with the child on, over its mean share in the
    control rows: how much the parent's latent shrinks when the child is on."""


@dataclass(frozen=True, kw_only=True)
class TruthDepth(Record):
    """Absorption of the pairs whose parent lies at one depth of the forest."""

    depth: int
    """The parents' depth (0: roots)."""
    pairs: int
    """Pairs scored."""
    absorption: float
    """Mean absorption over them."""
    partial_absorption: float
    """Mean partial absorption over them."""


@dataclass(frozen=True, kw_only=True)
class TruthGroup(Record):
    """Which true features one latent group's latents match: the paper's "later groups encode more specific
    features", on ground truth."""

    group: int
    """The group's number, 1 first."""
    latents: int
    """Latents in the group."""
    matched: int
    """Latents whose best-matching true feature has |cos| at least the cosine bar."""
    depth_counts: list[int]
    """How many of those features lie outside every tree, at depth 0 (roots), 1, ... (in that order)."""
    mean_depth: float | None = None
    """Mean depth of the matched features inside a tree (absent when there is none)."""
    mean_firing_rate: float | None = None
    """Mean true firing rate (held-out rows) of the matched features (absent when there is none)."""


@dataclass(frozen=True, kw_only=True)
class GroundTruthRecord(Record):
    """An SAE measured against a synthetic store's ground truth on its held-out rows (docs/metrics.md). MCC,
    uniqueness and the per-latent classification are SAELens's ``sae_lens.synthetic.evals`` definitions."""

    mcc: float = _title("MCC")
    """Mean |cos| of the Hungarian matching of decoder directions to true directions."""
    uniqueness: float = _title("uniqueness", "fraction")
    """Distinct best-matching true features over latents."""
    precision: float
    """Mean over latents of the precision of the latent firing as a detector of its best-matching feature."""
    recall: float
    """Mean over latents of its recall."""
    f1: float = _title("F1")
    """Mean over latents of its F1 (0 where undefined)."""
    accuracy: float
    """Mean over latents of its accuracy."""
    true_l0: float
    """Mean active true features per held-out row."""
    shrinkage: float
    """Mean ||x_hat|| / ||x|| over held-out rows."""
    matched_features: int
    """True features matched (Hungarian) to a latent with |cos| at least the cosine bar."""
    unique_features: int = _title("unique features")
    """Distinct true features that are the best match (|cos| at least the bar) of a latent that fired: the live,
    unique features the paper's notion of absorption says an absorbing SAE lacks."""
    cosine_bar: float
    """The |cos| at which a latent counts as representing a true feature."""
    directions: str
    """Which directions the cosines compare (they depend on the SAE's input normalisation)."""
    absorption: float | None = _optional_title("true absorption")
    """Mean absorption over the scored (parent, child) pairs (absent when none could be scored)."""
    partial_absorption: float | None = _optional_title("true partial absorption")
    """Mean partial absorption over them."""
    pairs_scored: int
    """(parent, child) pairs scored."""
    pairs_unlearned: int
    """Pairs not scored because no latent matches the parent at the cosine bar (a missing feature, not absorbed)."""
    pairs_few_rows: int
    """Pairs not scored for fewer than 10 rows with the child on or 10 control rows."""
    by_depth: list[TruthDepth]
    """Absorption per depth of the parent."""
    pairs: list[TruthPair]
    """Every scored pair."""
    groups: list[TruthGroup]
    """Per latent group: the depth and firing rate of the true features it matches."""
    rows: int
    """Held-out rows evaluated."""


@dataclass(frozen=True, kw_only=True)
class RunRecord(Record):
    """Which run was evaluated, on which store, after what training."""

    name: str
    """The run's name (its directory's name)."""
    run_dir: str
    """The run's directory."""
    sae: dict[str, Any]
    """The SAE's configuration as the run's config.json records it (variant, expansion, groups, gamma, l1,
    seed, ...; docs/fit.md)."""
    n_latents: int
    """Latents of the SAE (F)."""
    group_bounds: list[list[int]]
    """[start, stop) of each latent group, in order."""
    store: StoreRecord
    """The store evaluated on."""
    train: TrainRecord
    """The run's training summary."""


@dataclass(frozen=True, kw_only=True)
class EvalRecord(Behaviour, Reconstruction, RunRecord):
    """One run's evaluation, RUN/eval.json: one flat object of the run's, the reconstruction's and the LM's
    fields (the LM's are absent when evaluated with --no-kl)."""

    absorption: AbsorptionRecord | None = None
    """Feature absorption (``pipeline evaluate --absorption``); absent when not measured."""
    ground_truth: GroundTruthRecord | None = None
    """Measured against the ground truth of a synthetic store (``pipeline synth``); absent for an LM's store."""
    schema_version: int = EVAL_SCHEMA
    """This record's schema version (:data:`EVAL_SCHEMA`); a record read from an eval.json without one is version 1,
    before the record carried its version, provenance and evaluation options."""
    provenance: Provenance | None = None
    """The tool's version and commit, the libraries' versions and the device that evaluated the run, and when
    (store/provenance.py); absent in version 1."""
    evaluation: dict[str, Any] | None = None
    """The options of the `pipeline evaluate` that wrote it (docs/evaluate.md); absent in version 1."""

    def metric(self, name: str) -> Any:
        """A metric by its field name (None where not measured); unknown names are a bug, not a user error."""
        if name not in _field_names(EvalRecord):
            raise AttributeError(f"eval.json has no field {name!r}")
        return getattr(self, name)

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())

    @classmethod
    def read(cls, path: Path) -> EvalRecord:
        """The record of an eval.json of any schema version this version reads (:data:`READABLE_EVAL_SCHEMAS`)."""
        try:
            obj = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{path} is not valid JSON ({exc}): rerun `pipeline evaluate`") from None
        version = obj.get("schema_version", 1) if isinstance(obj, dict) else None
        if isinstance(obj, dict) and version not in READABLE_EVAL_SCHEMAS:
            raise PipelineError(f"{path} has schema version {version}; this version of the tool reads versions "
                                f"{', '.join(map(str, READABLE_EVAL_SCHEMAS))}: use a newer release, or rerun "
                                "`pipeline evaluate`")
        if isinstance(obj, dict):
            obj = {**obj, "schema_version": version}
        return cls.from_dict(obj, str(path))


# -- JSON Schema ------------------------------------------------------------------------------------------------

def json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of eval.json, from the record's fields, types and docstrings."""
    nested = (StoreRecord, TrainRecord, GroupStats, AbsorptionRecord, AbsorptionLetter, AbsorptionExcluded,
              GroundTruthRecord, TruthPair, TruthDepth, TruthGroup, Provenance)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "docs/eval-schema.json",
        "title": "eval.json",
        "description": f"{_doc(EvalRecord)} Generated from pipeline/evaluate/record.py: {REGENERATE}",
        **_object_schema(EvalRecord),
        "$defs": {c.__name__: {"description": _doc(c), **_object_schema(c)} for c in nested},
    }


def _object_schema(cls: type[Record]) -> dict[str, Any]:
    docs, hints = field_docs(cls), _hints(cls)
    props = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = _not_none(hints[f.name]) if f.default is None else hints[f.name]
        props[f.name] = {**_type_schema(tp), **dict(f.metadata), "description": docs[f.name]}
    required = [f.name for f in dataclasses.fields(cls) if _required(f)]  # type: ignore[arg-type]
    return {"type": "object", "properties": props, "required": required, "additionalProperties": False}


def _type_schema(tp: Any) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in args]}
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is dict:
        return {"type": "object"}
    if dataclasses.is_dataclass(tp):
        return {"$ref": f"#/$defs/{tp.__name__}"}
    return {"type": {int: "integer", float: "number", str: "string", bool: "boolean", type(None): "null"}[tp]}


def _not_none(tp: Any) -> Any:
    """``X | None`` -> X: an optional field is left out of the JSON, never written as null."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


# -- helpers ----------------------------------------------------------------------------------------------------

def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@cache
def _field_names(cls: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(cls))


def _doc(cls: type) -> str:
    return re.sub(r"\s+", " ", inspect.getdoc(cls) or "").strip()


def _to_json(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if dataclasses.is_dataclass(value):
        return {f.name: _to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_to_json(v) for v in value]
    return value


_SCALARS = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _from_json(tp: Any, value: Any, where: str) -> Any:
    """``value`` as type ``tp``: nested records built, scalars checked."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _from_json(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(tp):  # a nested record, or a part another module owns
        return _build(tp, value, where)
    if origin is list and isinstance(value, list):
        return [_from_json(args[0], v, where) for v in value]
    ok = (isinstance(value, dict) if origin is dict else isinstance(value, list) if origin is list
          else isinstance(value, _SCALARS[tp]) and (tp is bool or not isinstance(value, bool)))
    if not ok:
        raise PipelineError(f"{where} is {value!r}, not of type {getattr(tp, '__name__', tp)}: rerun "
                            "`pipeline evaluate`")
    return value


# -- metric names ---------------------------------------------------------------------------------------------

def metric_names(*names: str) -> tuple[str, ...]:
    """``names``, each checked to be a field of the record (so a rename fails at import, not in a report)."""
    unknown = [n for n in names if n not in _field_names(EvalRecord) | _field_names(GroupStats)]
    if unknown:
        raise AttributeError(f"not fields of the evaluation record: {', '.join(unknown)}")
    return names


SCALAR_METRICS = metric_names("mse", "mse_raw", "explained_variance", "explained_variance_normalised", "l0",
                              "active_features", "dead_features", "kl", "ce_clean", "ce_spliced",
                              "ce_zero_ablated", "ce_recovered")
"""Every per-run metric that is one number, in the order reports list them."""
HEADLINE_METRICS = metric_names("mse", "explained_variance", "l0", "active_features", "dead_features", "kl",
                                "ce_recovered")
"""The per-run metrics a summary shows (the report's table of every run, the browser's overview)."""
GROUP_METRICS = metric_names("live", "active", "token_rate", "feature_density", "intensity")
"""The per-group statistics averaged over seeds and shown per group."""


def columns(cls: type[Record], names: tuple[str, ...]) -> list[dict[str, str]]:
    """[{key, title[, unit]}] of these fields of ``cls``: what a table showing them needs."""
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return [{"key": n, **meta[n]} for n in names]



if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, ensure_ascii=False))
