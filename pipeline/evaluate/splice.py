"""Running the LM with a decoder layer's output replaced (by an SAE's reconstruction, or by zeros)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from harvest.model import decoder_layers

Replacement = Callable[[torch.Tensor], torch.Tensor]
"""Maps the layer's output rows at the replaced positions (N, D) to what flows on instead (N, D)."""


class Splicer:
    """Full forward passes of a causal LM, optionally with layer ``layer``'s output replaced at masked positions."""

    def __init__(self, model: nn.Module, layer: int) -> None:
        self.model = model
        self.module = decoder_layers(model)[0][layer]

    @contextmanager
    def replacing(self, replace: Replacement, mask_BT: torch.Tensor) -> Iterator[None]:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor | tuple):
            out = output[0] if isinstance(output, tuple) else output
            new = out.clone()
            new[mask_BT] = replace(out[mask_BT]).to(out.dtype)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = self.module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    @torch.inference_mode()
    def logits(self, ids_BT: torch.Tensor, replace: Replacement | None = None,
               mask_BT: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) in float32."""
        if replace is None:
            return self.model(input_ids=ids_BT, use_cache=False).logits.float()
        with self.replacing(replace, mask_BT):
            return self.model(input_ids=ids_BT, use_cache=False).logits.float()
