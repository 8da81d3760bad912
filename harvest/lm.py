"""The LM side of every stage: loading a causal LM (and checking it is a store's), capturing decoder layers'
outputs without computing the layers after the deepest, and running it with one layer's output replaced
(splicing)."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from harvest.errors import HarvestError
from harvest.hub import hub_reachable, looks_local
from store.format import ModelInfo, StoreMeta, TokenizerInfo

log = logging.getLogger(__name__)

_TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # On CPU, bf16 matmuls ran ~250x slower than fp32 on this project's machines; on CUDA bf16 is native.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _TORCH_DTYPES[dtype]


def _hub_kwargs(name: str) -> dict:
    """Offline-aware loading: without a network, read only the local HF cache (fails fast, not after retries)."""
    if looks_local(name):
        return {}
    return {} if hub_reachable() else {"local_files_only": True}


def _load_error(what: str, name: str, exc: Exception) -> HarvestError:
    if looks_local(name):
        return HarvestError(f"cannot load the {what} from '{name}': {exc}".split("\n")[0])
    if not hub_reachable():
        return HarvestError(
            f"cannot load {what} '{name}': the Hugging Face Hub is unreachable (no network?) and it is not in the "
            "local cache: download it where there is a network and pass the folder with --model PATH"
        )
    return HarvestError(f"cannot load {what} '{name}' from the Hugging Face Hub: {str(exc).splitlines()[0]}")


def _check_exists(name: str) -> None:
    """A path that names nothing on disk: say so, rather than the hub library's 'Repo id must be in the form'."""
    if looks_local(name) and not Path(name).expanduser().exists():
        raise HarvestError(f"the model folder '{name}' does not exist: pass an existing folder or a hub id with "
                           "--model")


def load_tokenizer(name: str, revision: str | None = None):
    from transformers import AutoTokenizer

    _check_exists(name)
    try:
        return AutoTokenizer.from_pretrained(name, revision=revision, **_hub_kwargs(name))
    except (OSError, ValueError) as exc:
        raise _load_error("tokenizer", name, exc) from exc


def load_model(name: str, revision: str | None, device: torch.device, dtype: torch.dtype) -> nn.Module:
    from transformers import AutoModelForCausalLM

    _check_exists(name)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, revision=revision, dtype=dtype, **_hub_kwargs(name))
    except (OSError, ValueError) as exc:
        raise _load_error("model", name, exc) from exc
    return model.to(device).eval().requires_grad_(False)


def load_store_lm(meta: StoreMeta, model: str | None = None, device: torch.device | None = None,
                  dtype: torch.dtype = torch.float32) -> nn.Module:
    """The LM a store was made from (at its revision), or ``model`` instead, refused unless its weights are the
    store's (same embedding fingerprint)."""
    name = model or meta.model.name
    device = torch.device("cpu") if device is None else device
    try:
        lm = load_model(name, meta.model.revision if model is None else None, device, dtype)
    except HarvestError as exc:
        raise HarvestError(f"{exc} (the store was made with '{meta.model.name}'; pass --model)") from exc
    if fingerprint(lm) != meta.model.fingerprint:
        raise HarvestError(
            f"model '{name}' is not the one the store was made from ('{meta.model.name}': its embedding "
            "fingerprint differs): pass the right --model"
        )
    return lm


def load_store_tokenizer(meta: StoreMeta, name: str | None = None):
    """The tokenizer a store was made with (at its model's revision when it is the model's), or ``name``."""
    name = name or meta.tokenizer.name
    revision = meta.model.revision if name == meta.model.name else None
    try:
        return load_tokenizer(name, revision)
    except HarvestError as exc:
        raise HarvestError(f"{exc}: pass --tokenizer PATH (a folder holding the store's tokenizer)") from exc


DECODER_LAYER_PATHS = ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers",
                       "model.decoder.layers")


def decoder_layers(model: nn.Module) -> tuple[nn.ModuleList, str]:
    """The model's list of decoder layers and its dotted name (``model.layers`` for Gemma and Llama)."""
    for path in DECODER_LAYER_PATHS:
        module: nn.Module | None = model
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, nn.ModuleList):
            return module, path
    raise HarvestError(f"cannot find the decoder layers of {type(model).__name__}: this architecture is not supported")


def check_layer(model: nn.Module, layer: int, name: str) -> None:
    layers, _ = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise HarvestError(
            f"layer {layer} is out of range: {name} has {len(layers)} decoder layers (0..{len(layers) - 1}); "
            "pass --layer in that range"
        )


def check_context_length(model: nn.Module, length: int, name: str) -> None:
    """Refuse contexts longer than the model's positions: past them its activations are not what it computes."""
    cfg = getattr(model.config, "text_config", None) or model.config
    most = getattr(cfg, "max_position_embeddings", None)
    if isinstance(most, int) and length > most:
        raise HarvestError(f"--ctx {length} is longer than {name} allows ({most} positions): pass --ctx {most} or less")


class _StopForward(Exception):  # noqa: N818 (control flow, not an error)
    """Raised by the capture hook so that no layer after the captured one runs."""


class LayerCapture:
    """Runs a model up to and including decoder layer ``max(layers)`` and returns the outputs of ``layers``.

    The output of decoder layer L is the residual stream after it, which is ``hidden_states[L + 1]`` of the
    full model for every layer but the last (HF applies the final norm to the last entry of hidden_states).
    A forward hook on each captured layer records its output; the deepest one's hook raises, so the layers after
    it, the final norm and the LM head never run: several layers cost one pass to the deepest.
    """

    def __init__(self, model: nn.Module, layers: int | Sequence[int]) -> None:
        modules, path = decoder_layers(model)
        self.model = model
        self.layers = tuple(sorted({layers} if isinstance(layers, int) else set(layers)))
        """The captured layers, shallowest first."""
        self.hook_points = {layer: f"{path}.{layer}" for layer in self.layers}
        self._modules = {layer: modules[layer] for layer in self.layers}
        self._captured: dict[int, torch.Tensor] = {}

    @property
    def hook_point(self) -> str:
        """The captured module's name, e.g. ``model.layers.19`` (a capture of one layer)."""
        return self.hook_points[self._only()]

    def _only(self) -> int:
        if len(self.layers) != 1:
            raise ValueError(f"this capture holds layers {list(self.layers)}, not one")
        return self.layers[0]

    def _hook(self, layer: int) -> Callable:
        deepest = layer == self.layers[-1]

        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple) -> None:
            out = output[0] if isinstance(output, tuple) else output
            # A shallower layer's output flows on into the next layer; a copy stays as it was even if one of them
            # works in place (cheap: one activation tensor, against the layers' own work).
            self._captured[layer] = out if deepest else out.clone()
            if deepest:
                raise _StopForward

        return hook

    @torch.inference_mode()
    def outputs(self, ids_CT: torch.Tensor) -> dict[int, torch.Tensor]:
        """Each captured layer's output for a batch of contexts, shape (C, T, D), in the model's dtype."""
        handles = [module.register_forward_hook(self._hook(layer)) for layer, module in self._modules.items()]
        try:
            self.model(input_ids=ids_CT, use_cache=False)
        except _StopForward:
            pass
        finally:
            for handle in handles:
                handle.remove()
        out, self._captured = self._captured, {}
        missing = [self.hook_points[layer] for layer in self.layers if layer not in out]
        if missing:
            raise HarvestError(f"the model never reached {', '.join(missing)}")
        return out

    def __call__(self, ids_CT: torch.Tensor) -> torch.Tensor:
        """The one captured layer's output for a batch of contexts, shape (C, T, D), in the model's dtype."""
        layer = self._only()
        return self.outputs(ids_CT)[layer]


Replacement = Callable[[torch.Tensor], torch.Tensor]
"""Maps the layer's output rows at the replaced positions (B, D) to what flows on instead (B, D)."""


class Splicer:
    """Full forward passes of a causal LM, optionally with layer ``layer``'s output replaced at masked positions."""

    def __init__(self, model: nn.Module, layer: int) -> None:
        self.model = model
        self.module = decoder_layers(model)[0][layer]

    @contextmanager
    def replacing(self, replace: Replacement, mask_CT: torch.Tensor) -> Iterator[None]:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple):
            out = output[0] if isinstance(output, tuple) else output
            new = out.clone()
            new[mask_CT] = replace(out[mask_CT]).to(out.dtype)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = self.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @torch.inference_mode()
    def logits(self, ids_CT: torch.Tensor, replace: Replacement | None = None,
               mask_CT: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (C, T, V) in float32."""
        if replace is None:
            return self.model(input_ids=ids_CT, use_cache=False).logits.float()
        with self.replacing(replace, mask_CT):
            return self.model(input_ids=ids_CT, use_cache=False).logits.float()


def fingerprint(model: nn.Module) -> str:
    """sha256 of the first 64 rows of the token embedding (float32): tells models apart cheaply."""
    emb = model.get_input_embeddings().weight[:64].detach().float().cpu().contiguous()
    return hashlib.sha256(emb.numpy().tobytes()).hexdigest()[:16]


def model_info(model: nn.Module, name: str, weights_digest: str | None = None) -> ModelInfo:
    cfg = model.config
    text_cfg = getattr(cfg, "text_config", None) or cfg
    layers, _ = decoder_layers(model)
    return ModelInfo(
        name=name,
        revision=getattr(cfg, "_commit_hash", None),
        architecture=type(model).__name__,
        n_layers=len(layers),
        d_model=int(text_cfg.hidden_size),
        vocab_size=int(text_cfg.vocab_size),
        fingerprint=fingerprint(model),
        weights_digest=weights_digest,
    )


@dataclass(frozen=True)
class SpecialTokens:
    bos: int
    eos: int
    pad: int


def special_tokens(tokenizer, name: str) -> SpecialTokens:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None and eos is None:
        raise HarvestError(f"the tokenizer of {name} has neither a BOS nor an EOS token; contexts need one")
    bos = eos if bos is None else bos  # GPT-2 style models mark both ends with one token
    eos = bos if eos is None else eos
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return SpecialTokens(int(bos), int(eos), int(pad))


def tokenizer_info(tokenizer, name: str) -> TokenizerInfo:
    special = special_tokens(tokenizer, name)
    return TokenizerInfo(
        name=name, bos_token_id=special.bos, eos_token_id=special.eos, pad_token_id=special.pad,
        vocab_size=len(tokenizer),
    )
