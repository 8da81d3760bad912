"""A synthetic model from its SAELens configuration: built once by ``sae_lens.synthetic.SyntheticModel`` (the
field's reference for the dictionary, firing probabilities, correlation, hierarchy and magnitudes), converted to
the plain tensors of :class:`store.truth.GroundTruth`, and cached, so that its orthogonalisation runs once.

SAELens is imported only here, and only to build a model the cache does not hold yet (importing it takes seconds).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from harvest.errors import HarvestError
from harvest.synthetic.presets import PRESETS
from store.files import replace_atomically, write_json_atomic
from store.truth import GroundTruth

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called as (steps done, total steps) while the dictionary is orthogonalised."""

TENSORS_FILE = "truth.safetensors"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class ModelSpec:
    """Which synthetic model: a preset's or a config file's SAELens configuration, normalised."""

    config: dict[str, Any]
    """SAELens's SyntheticModelConfig.to_dict(), as SAELens itself writes it back."""
    preset: str | None = None
    """The preset's name, when it came from one."""
    source: str | None = None
    """The config file it was read from, when it came from one."""

    @property
    def name(self) -> str:
        """How stores and runs name the model: the preset, else the config file's name."""
        return self.preset or Path(self.source or "config").name

    @property
    def digest(self) -> str:
        """sha256 of the configuration in canonical JSON: the cache key (with the device that builds it)."""
        return hashlib.sha256(json.dumps(self.config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def spec_of(preset: str | None = None, config_file: str | None = None) -> ModelSpec:
    """The model of ``--preset`` or ``--config`` (exactly one), its configuration checked by SAELens."""
    if (preset is None) == (config_file is None):
        raise HarvestError("give a synthetic model with --preset NAME or --config FILE (one of them)")
    if preset is not None:
        if preset not in PRESETS:
            raise HarvestError(f"unknown synthetic preset {preset!r}: use one of {', '.join(PRESETS)}, or --config "
                               "FILE")
        return ModelSpec(normalised(PRESETS[preset].config, f"preset {preset}"), preset=preset)
    path = Path(config_file).expanduser()
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise HarvestError(f"cannot read --config {config_file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise HarvestError(f"--config {config_file} is not JSON ({exc}): pass SAELens's "
                           "SyntheticModelConfig.to_dict() as JSON") from None
    return ModelSpec(normalised(raw, f"--config {config_file}"), source=str(path.resolve()))


def normalised(config: Any, what: str) -> dict[str, Any]:
    """``config`` as SAELens reads and writes it back; what SAELens rejects is one HarvestError line."""
    if not isinstance(config, dict):
        raise HarvestError(f"{what} is not a JSON object: pass SAELens's SyntheticModelConfig.to_dict()")
    SyntheticModelConfig = _sae_lens().SyntheticModelConfig
    try:
        return SyntheticModelConfig.from_dict(config).to_dict()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HarvestError(f"SAELens rejects {what}: {message}") from None


def _sae_lens():
    try:
        import sae_lens.synthetic as synthetic
    except ImportError:
        raise HarvestError("synthetic models need SAELens: pip install 'hfg-sae[synthetic]' (make setup installs "
                           "it)") from None
    return synthetic


def default_cache() -> Path:
    """Where built models are cached: $HFG_CACHE/synthetic (the project's .cache under make)."""
    return Path(os.environ.get("HFG_CACHE", Path.home() / ".cache" / "hfg-sae")) / "synthetic"


def load_or_build(spec: ModelSpec, cache: str | Path | None = None, device: str | torch.device = "cpu",
                  on_progress: Progress | None = None) -> GroundTruth:
    """The model of ``spec``: from the cache when it holds it, else built by SAELens on ``device`` (where the
    orthogonalisation runs; a CUDA build gives other floats than a CPU one, so each has its own entry) and cached."""
    device = torch.device(device)
    folder = Path(cache or default_cache()) / f"{spec.digest[:24]}-{device.type}"
    if (folder / TENSORS_FILE).exists():
        try:
            return from_tensors(load_file(str(folder / TENSORS_FILE)), str(folder))
        except Exception as exc:  # a damaged cache entry is rebuilt, not trusted
            log.warning("the cached synthetic model in %s is unreadable (%s): building it again", folder, exc)
    truth = build(spec, device, on_progress)
    write_json_atomic(folder / CONFIG_FILE, spec.config)
    tensors = {k: v.contiguous() for k, v in to_tensors(truth).items()}
    replace_atomically(folder / TENSORS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    log.info("cached the synthetic model %s in %s", spec.name, folder)
    return truth


def build(spec: ModelSpec, device: torch.device, on_progress: Progress | None = None) -> GroundTruth:
    """Build the model with SAELens (its own seeds, on ``device``) and convert it."""
    synthetic = _sae_lens()
    cfg = synthetic.SyntheticModelConfig.from_dict(spec.config)
    log.info("building the synthetic model %s with SAELens on %s (%d features in %d dimensions)", spec.name,
             device.type, cfg.num_features, cfg.hidden_dim)
    with _orthogonalisation_progress(on_progress):
        model = synthetic.SyntheticModel(cfg, device=str(device))
    return from_sae_lens(model)


def from_sae_lens(model: Any) -> GroundTruth:
    """A SAELens ``SyntheticModel`` as plain tensors."""
    gen = model.activation_generator
    G = model.cfg.num_features
    parent = torch.full((G,), -1, dtype=torch.int64)
    depth = torch.full((G,), -1, dtype=torch.int64)
    exclusive = torch.zeros(G, dtype=torch.bool)
    scale = torch.zeros(G, dtype=torch.bool)
    stack = [(root, -1, 0) for root in (model.hierarchy.roots if model.hierarchy is not None else [])]
    while stack:
        node, up, level = stack.pop()
        if node.feature_index is None:
            # SAELens's generated hierarchies give every node a feature; an organisational node has no row here.
            raise HarvestError("the synthetic model's hierarchy has a node without a feature, which this tool "
                               "cannot store: use a generated hierarchy (a HierarchyConfig)")
        g = node.feature_index
        parent[g], depth[g] = up, level
        exclusive[g] = bool(node.mutually_exclusive_children)
        scale[g] = bool(node.scale_children_by_parent)
        stack += [(child, g, level + 1) for child in node.children]
    corr = model.correlation_matrix

    def cpu(t: torch.Tensor) -> torch.Tensor:
        return t.detach().float().cpu().contiguous()

    return GroundTruth(
        dictionary_GD=cpu(model.feature_dict.feature_vectors), bias_D=cpu(model.feature_dict.bias),
        probability_G=cpu(gen.firing_probabilities), magnitude_mean_G=cpu(gen.mean_firing_magnitudes),
        magnitude_std_G=cpu(gen.std_firing_magnitudes), parent_G=parent, depth_G=depth, exclusive_G=exclusive,
        scale_children_G=scale,
        correlation_factor_GQ=None if corr is None else cpu(corr.correlation_factor),
        correlation_diag_G=None if corr is None else cpu(corr.correlation_diag),
    )


def to_sae_lens(truth: GroundTruth, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """SAELens's (FeatureDictionary, ActivationGenerator) of this model: its reference sampler, and what its
    ``eval_sae_on_synthetic_data`` takes."""
    synthetic = _sae_lens()
    fd = synthetic.FeatureDictionary(truth.n_features, truth.d_model, bias=False, initializer=None, device=device)
    fd.feature_vectors.data = truth.dictionary_GD.to(device).clone()
    fd.bias.data = truth.bias_D.to(device).clone()
    modifier = synthetic.hierarchy_modifier(_nodes(truth)) if int((truth.depth_G >= 0).sum()) else None
    corr = None
    if truth.correlation_factor_GQ is not None:
        corr = (truth.correlation_factor_GQ.to(device), truth.correlation_diag_G.to(device))
    gen = synthetic.ActivationGenerator(
        truth.n_features, truth.probability_G.to(device), std_firing_magnitudes=truth.magnitude_std_G.to(device),
        mean_firing_magnitudes=truth.magnitude_mean_G.to(device), modify_activations=modifier,
        correlation_matrix=corr, device=device)
    return fd, gen


def _nodes(truth: GroundTruth) -> list[Any]:
    """The forest as SAELens's HierarchyNode trees."""
    HierarchyNode = _sae_lens().HierarchyNode

    def node(g: int) -> Any:
        return HierarchyNode(feature_index=g, children=[node(c) for c in truth.children_of(g)],
                             mutually_exclusive_children=bool(truth.exclusive_G[g]),
                             scale_children_by_parent=bool(truth.scale_children_G[g]))

    return [node(int(g)) for g in (truth.depth_G == 0).nonzero().flatten()]


def to_tensors(truth: GroundTruth) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(a) for name, a in truth.arrays().items()}


def from_tensors(tensors: dict[str, torch.Tensor], where: str) -> GroundTruth:
    return GroundTruth.from_arrays({k: v.numpy() for k, v in tensors.items()}, where)


@contextlib.contextmanager
def _orthogonalisation_progress(on_progress: Progress | None) -> Iterator[None]:
    """Route SAELens's tqdm bar over the orthogonalisation to ``on_progress`` (a rich bar with rate and ETA)."""
    import sae_lens.synthetic.feature_dictionary as fd

    class Bar:
        def __init__(self, total: int | None = None, **_: Any) -> None:
            self.total, self.n = total or 0, 0

        def update(self, n: int = 1) -> None:
            self.n += n
            if on_progress is not None:
                on_progress(self.n, self.total)

        def set_description(self, *_: Any, **__: Any) -> None:
            pass

        def close(self) -> None:
            pass

    original = fd.tqdm
    fd.tqdm = Bar
    try:
        yield
    finally:
        fd.tqdm = original
