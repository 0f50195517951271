"""One small facade over the edit methods: latents (or latent files) in, edited latents or images out.

Invert a photo once (``stylerig-au invert`` writes a latent file), then edit it many times::

    editor = Editor(G, LinearDirections.load("dirs.pt", G))
    record = load_latent("photo.pt")
    images = editor.render(record, AU(12, +2) + AU(6, +1))      # [1, 3, R, R] in [-1, 1]
    frames = [editor.render(record, ws=w) for w in editor.interpolate(record, presets.smile, 8)]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from stylerig_au.edit.directions import CurrentAUs, LinearDirections
from stylerig_au.edit.spec import Edit
from stylerig_au.errors import StylerigError

METHODS = ("linear", "mapper")

Latent = torch.Tensor | Mapping[str, Any]
"""ws [N, num_ws, w_dim] / [num_ws, w_dim], or a latent record from :func:`stylerig_au.invert.load_latent`."""


class Editor:
    """Apply :class:`~stylerig_au.edit.spec.Edit` objects with one method, chosen by name.

    Args:
        G: a generator (the :class:`~stylerig_au.models.protocol.Generator` protocol).
        directions: linear AU directions for ``G`` (method 'linear').
        method: 'linear' | 'mapper' (the mapper is not trained yet).
        measure: optional ``images [N, 3, R, R] in [-1, 1] -> current AUs`` (a tensor [N, 17] in
            ``AU_NUMBERS`` order or a dict), used for absolute targets when no ``current_aus`` is given.

    Raises:
        StylerigError: unknown method, the mapper, missing directions, or directions for another generator.
    """

    def __init__(self, G, directions: LinearDirections | None = None, method: str = "linear",
                 measure: Callable[[torch.Tensor], CurrentAUs] | None = None) -> None:
        if method not in METHODS:
            raise StylerigError(f"unknown edit method '{method}'; choose one of: {', '.join(METHODS)}")
        if method == "mapper":
            raise StylerigError("the AU mapper is not trained yet; use method='linear'")
        if directions is None:
            raise StylerigError("method 'linear' needs LinearDirections (LinearDirections.load(path, G)); "
                                "none are learned for this generator yet")
        directions.check(G)
        self.G, self.directions, self.method, self.measure = G, directions, method, measure

    def _ws(self, latent: Latent) -> torch.Tensor:
        if isinstance(latent, torch.Tensor):
            return latent
        if isinstance(latent, Mapping) and "ws" in latent:
            if latent.get("generator", self.G.name) != self.G.name:
                raise StylerigError(f"latent was made with generator {latent['generator']!r}, not {self.G.name!r}")
            return latent["ws"]
        raise StylerigError(f"expected ws (a tensor) or a latent record (load_latent), got {type(latent).__name__}")

    def edit(self, latent: Latent, edit: Edit, current_aus: CurrentAUs | None = None) -> torch.Tensor:
        """Edited W+ of the same shape as the latent's ws. Absolute targets use ``current_aus``, else
        ``measure`` on the rendered latent (one linear step)."""
        if not isinstance(edit, Edit):
            raise StylerigError(f"expected an Edit (e.g. AU(12, 2)), got {type(edit).__name__}")
        ws = self._ws(latent)
        if current_aus is None and not edit.is_relative and self.measure is not None:
            current_aus = self.measure(self._synth(latent, ws))
        return self.directions.apply(ws, edit, current_aus)

    def _synth(self, latent: Latent, ws: torch.Tensor) -> torch.Tensor:
        from stylerig_au.invert import render

        batch = ws[None] if ws.ndim == 2 else ws
        noise = latent.get("noise") if isinstance(latent, Mapping) else None
        device = batch.device
        with torch.no_grad():
            return render(self.G, batch, {k: v.to(device) for k, v in (noise or {}).items()}).clamp(-1, 1)

    def render(self, latent: Latent, edit: Edit | None = None, current_aus: CurrentAUs | None = None, *,
               ws: torch.Tensor | None = None) -> torch.Tensor:
        """Images [N, 3, R, R] float32 in [-1, 1] of the latent edited by ``edit`` (or unedited), or of the
        given ``ws`` (e.g. an interpolation frame) with the latent's noise maps."""
        if ws is None:
            ws = self.edit(latent, edit, current_aus) if edit is not None else self._ws(latent)
        return self._synth(latent, ws)

    def interpolate(self, latent: Latent, edit: Edit, steps: int, current_aus: CurrentAUs | None = None) -> list[torch.Tensor]:
        """``steps`` W+ frames from the latent (first, bit-identical) to the full edit (last, bit-identical),
        linearly in W+; only slots the edit changes differ from the input."""
        if not isinstance(steps, int) or steps < 2:
            raise StylerigError(f"interpolation needs at least 2 steps, got {steps!r}")
        start = self._ws(latent)
        end = self.edit(latent, edit, current_aus)
        changed = (end != start).reshape(-1, *start.shape[-2:]).any(dim=(0, 2)).nonzero().flatten()
        frames = []
        for i in range(steps):
            if i == 0:
                frames.append(start.clone())
            elif i == steps - 1:
                frames.append(end.clone())
            else:
                frame = start.clone()
                frame[..., changed, :] = torch.lerp(start[..., changed, :], end[..., changed, :], i / (steps - 1))
                frames.append(frame)
        return frames
