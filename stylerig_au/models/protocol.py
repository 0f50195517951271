"""The generator protocol: the small surface every generator exposes.

Inversion, editing and evaluation only use this protocol, so they never ask which generator
they hold (DESIGN.md section 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch

SlotGroup = Literal["coarse", "middle", "fine"]


@dataclass(frozen=True)
class StyleSlot:
    """What one W+ slot drives.

    Attributes:
        index: position of the slot in W+ (0 .. num_ws-1).
        resolution: the feature-map resolution the slot modulates (e.g. 4, 8, ... 1024);
            0 for a slot the generator does not use.
        group: 'coarse' (4-8 px: pose, face shape), 'middle' (16-32 px: features,
            expression) or 'fine' (64 px and up: colour, texture).
        used: False for slots the network ignores (kept so W+ shapes match).
    """

    index: int
    resolution: int
    group: SlotGroup
    used: bool = True


def group_for_resolution(resolution: int) -> SlotGroup:
    """The conventional StyleGAN group of a feature resolution: <=8 coarse, <=32 middle, else fine."""
    if resolution <= 8:
        return "coarse"
    if resolution <= 32:
        return "middle"
    return "fine"


@runtime_checkable
class Generator(Protocol):
    """A StyleGAN-like generator.

    Attributes:
        name: a short id stored in latent files (e.g. 'mobilestylegan-ffhq-1024').
        z_dim: size of z (512).
        w_dim: size of one w (512).
        num_ws: number of W+ slots.
        resolution: output image size (square).
        w_avg: float32 tensor [w_dim], the mean w (truncation centre, inversion start).
        slots: one StyleSlot per W+ slot.
    """

    name: str
    z_dim: int
    w_dim: int
    num_ws: int
    resolution: int
    w_avg: torch.Tensor
    slots: tuple[StyleSlot, ...]

    def mapping(self, z: torch.Tensor, psi: float = 1.0) -> torch.Tensor:
        """Map z [N, z_dim] (standard normal) to w [N, w_dim], truncated towards w_avg by psi."""
        ...

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """Render W+ latents [N, num_ws, w_dim] to RGB images [N, 3, resolution, resolution].

        Values are nominally in [-1, 1] but not clamped (so gradients always flow); clamp before display.
        """
        ...
