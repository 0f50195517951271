"""Style-space (S) access: the per-channel style vectors each synthesis layer computes from its W+ slot.

Every styled layer of the generator turns its slot of W+ into one scale per input channel by an affine
map (``s = A w + b``); StyleSpace (Wu, Lischinski and Shechtman, CVPR 2021) found these channels far
more disentangled and more local than W or W+: single channels move a mouth corner or a brow and
nothing else. An edit in S adds an offset to chosen channels; it cannot be written as a change of W+,
so it is applied while rendering (:func:`style_offsets`).

Only generators whose styled layers are :class:`~stylerig_au.models.mobilestylegan.StyleAffine`
modules (MobileStyleGAN, the default) are supported; others get a one-line error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from stylerig_au.errors import StylerigError


@dataclass(frozen=True)
class StyleLayer:
    """One styled layer: its module name, the W+ slot it reads, and its channels' place in the flat S vector."""

    name: str
    module: torch.nn.Module
    slot: int
    start: int
    channels: int


def style_layers(G) -> list[StyleLayer]:
    """The generator's styled layers in synthesis order, their channels laid end to end (S has
    ``sum(channels)`` entries: 6,752 for MobileStyleGAN-FFHQ-1024)."""
    from stylerig_au.models.mobilestylegan import StyleAffine

    synthesis = getattr(G, "synthesis", None)
    slot_of = getattr(synthesis, "slot_of", None)
    if slot_of is None:
        raise StylerigError(f"style-space edits need a MobileStyleGAN generator, not {getattr(G, 'name', type(G).__name__)!r}")
    slots = slot_of()
    layers, start = [], 0
    for name, module in synthesis.named_modules():
        if isinstance(module, StyleAffine):
            key = name.removesuffix(".mod")
            if key not in slots:
                raise StylerigError(f"styled layer {name!r} reads no known W+ slot")
            channels = int(module.weight.shape[0])
            layers.append(StyleLayer(name, module, int(slots[key]), start, channels))
            start += channels
    if not layers:
        raise StylerigError(f"generator {getattr(G, 'name', '?')!r} has no styled layers")
    return layers


def styles(G, ws: torch.Tensor) -> torch.Tensor:
    """The style vectors float32 [N, C] of W+ latents ws [N, num_ws, w_dim] (no synthesis is run)."""
    if ws.ndim != 3 or ws.shape[1] != G.num_ws:
        raise StylerigError(f"styles() takes ws [N, {G.num_ws}, w_dim], got {list(ws.shape)}")
    with torch.no_grad():
        return torch.cat([layer.module(ws[:, layer.slot].float())[:, :, 0, 0] for layer in style_layers(G)], dim=1)


@contextmanager
def style_offsets(G, offsets: torch.Tensor) -> Iterator[None]:
    """While active, every synthesis of ``G`` adds ``offsets`` to its style vectors.

    Args:
        offsets: float [B, C] or [C] (C: all channels of :func:`style_layers`); a [B, C] offset row k is added
            to batch row k (B must equal the rendered batch), a [C] offset to every row. Gradients flow to it.
    """
    layers = style_layers(G)
    total = layers[-1].start + layers[-1].channels
    if offsets.shape[-1] != total or offsets.ndim not in (1, 2):
        raise StylerigError(f"style offsets must be [C] or [B, C] with C = {total}, got {list(offsets.shape)}")
    rows = offsets[None] if offsets.ndim == 1 else offsets

    def add(layer: StyleLayer):
        def hook(_module, _inputs, out):
            part = rows[:, layer.start:layer.start + layer.channels].to(out.dtype)
            if part.shape[0] not in (1, out.shape[0]):
                raise StylerigError(f"style offsets for {part.shape[0]} images, but {out.shape[0]} are rendered")
            return out + part[:, :, None, None]
        return hook

    handles = [layer.module.register_forward_hook(add(layer)) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
