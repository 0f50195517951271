"""One small facade over the edit methods: latents (or latent files) in, edited latents or images out.

Invert a photo once (``stylerig-au invert`` writes a latent file), then edit it many times::

    editor = Editor(G, LinearDirections.load("dirs.pt", G))
    record = load_latent("photo.pt")
    images = editor.render(record, AU(12, +2) + AU(6, +1))      # [1, 3, R, R] in [-1, 1]
    frames = [editor.render(record, presets.smile, ws=w) for w in editor.interpolate(record, presets.smile, 8)]

With an :class:`~stylerig_au.edit.refine.EditRefiner` every edit is then polished for the face by a
few optimisation steps against the student AU detector (slow: ~30 s an edit on a CPU).

By default (``local=True``) every rendered edit is kept to the face region of its AUs (brows, eyes, nose,
mouth and chin, from the landmarks of the unedited face), blended inside the generator
(:mod:`stylerig_au.edit.local`): hair, background and the rest of the face stay as they were.
With ``motion=True`` an edit is shown as the unedited face moved the way the edit moves its landmarks
(:mod:`stylerig_au.edit.motion`): no texture of the edit (beard, glasses, wrinkles) reaches the picture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
import hashlib
from typing import Any

import numpy as np
import torch

from stylerig_au.edit.directions import CurrentAUs, LinearDirections
from stylerig_au.edit.spec import Edit, check_scale
from stylerig_au.errors import StylerigError

METHODS = ("linear", "mapper")

Latent = torch.Tensor | Mapping[str, Any]
"""ws [N, num_ws, w_dim] / [num_ws, w_dim], or a latent record from :func:`stylerig_au.invert.load_latent`."""


KEEP_BASE_FACES = 4  # a local edit keeps the unedited render of a latent with at most this many faces


class Editor:
    """Apply :class:`~stylerig_au.edit.spec.Edit` objects with one method, chosen by name.

    Args:
        G: a generator (the :class:`~stylerig_au.models.protocol.Generator` protocol).
        directions: linear AU directions for ``G`` (method 'linear').
        method: 'linear' | 'mapper'.
        mapper: the AU-conditioned mapper for ``G`` (method 'mapper'; :func:`~stylerig_au.edit.mapper.load_default_mapper`).
        measure: optional ``images [N, 3, R, R] in [-1, 1] -> current AUs`` (a tensor [N, 17] in
            ``AU_NUMBERS`` order or a dict), used for absolute targets when no ``current_aus`` is given.
        refiner: optional :class:`~stylerig_au.edit.refine.EditRefiner`; each edit of the method is then
            refined for its face (on the slots the edit's layer restriction allows).
        local: render each edit only inside the face region of its AUs (:mod:`stylerig_au.edit.local`; the
            CLI's default too); False lets it change the whole picture. The latents :meth:`edit` returns are
            the same either way, only :meth:`render` differs.
        local_from: with ``local``, blend from this feature resolution up.
        motion: show each edit as the unedited face moved the way the edit moves its 68 landmarks, inside
            the AUs' face region (:mod:`stylerig_au.edit.motion`; ``local`` is then moot); only the inner
            mouth and eyes come from the edited render. Same latents, only :meth:`render` differs.

    Raises:
        StylerigError: unknown method, a missing mapper or directions, or either made for another generator.
    """

    def __init__(self, G, directions: LinearDirections | None = None, method: str = "linear",
                 measure: Callable[[torch.Tensor], CurrentAUs] | None = None, mapper=None, refiner=None,
                 local: bool = True, local_from: int | None = None, motion: bool = False) -> None:
        if method not in METHODS:
            raise StylerigError(f"unknown edit method '{method}'; choose one of: {', '.join(METHODS)}")
        if method == "mapper":
            from stylerig_au.edit.mapper import check_mapper

            if mapper is None:
                raise StylerigError("method 'mapper' needs an AU mapper (load_default_mapper(G), or load_mapper(path, G))")
            check_mapper(mapper, G)
        elif directions is None:
            raise StylerigError("method 'linear' needs LinearDirections (LinearDirections.load(path, G)); "
                                "none are learned for this generator yet")
        if directions is not None:
            directions.check(G)
        if refiner is not None and refiner.G is not G:
            raise StylerigError("the edit refiner was made for another generator than this editor's")
        self.G, self.directions, self.method, self.measure, self.mapper = G, directions, method, measure, mapper
        self.refiner = refiner
        from stylerig_au.edit.local import DEFAULT_FROM_RESOLUTION, feature_layers

        if local:
            feature_layers(G)  # a generator that cannot blend is refused here, not at the first render
        self.local, self.local_from = bool(local), int(local_from or DEFAULT_FROM_RESOLUTION)
        self.motion = bool(motion)
        self._faces: dict[bytes, list | str] = {}  # unedited renders' FaceMarks (or why not), by W+ digest
        self._renders: dict[bytes, torch.Tensor] = {}  # motion: unedited renders, warped by each edit
        self._bases: dict[bytes, object] = {}  # local: the unedited render each edit blends with (a BaseRender)
        self._warned: set[bytes] = set()

    @property
    def aus(self) -> tuple[int, ...]:
        """The AUs this editor's method can edit."""
        return tuple(self.mapper.aus) if self.method == "mapper" else tuple(self.directions.aus)

    def check_aus(self, aus: Iterable[int | str]) -> None:
        """Raise StylerigError (before any slow work) naming the first AU this editor's method cannot edit."""
        for au in aus:
            self.mapper.au_index(au) if self.method == "mapper" else self.directions.index(au)

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
        check_scale(edit)  # the CLI's bound holds for the API too: no change beyond the 0-5 scale's width
        ws = self._ws(latent)
        if current_aus is None and not edit.is_relative and self.measure is not None:
            current_aus = self.measure(self._synth(latent, ws))
        if self.method == "mapper":
            from stylerig_au.edit.mapper import apply_mapper

            edited = apply_mapper(self.mapper, ws, edit, self.G.slots, current_aus)
        else:
            edited = self.directions.apply(ws, edit, current_aus)
        if self.refiner is None:
            return edited
        return self._refine(latent, ws, edited, edit, current_aus)

    def _refine(self, latent: Latent, ws: torch.Tensor, edited: torch.Tensor, edit: Edit,
                current_aus: CurrentAUs | None) -> torch.Tensor:
        from stylerig_au.edit.directions import _current, add_on_slots, as_batch
        from stylerig_au.edit.spec import layer_mask

        batch, single = as_batch(ws, self.G.num_ws, self.G.w_dim)
        n, aus = batch.shape[0], self.refiner.aus
        change = torch.zeros(n, len(aus))
        slots = torch.zeros(self.G.num_ws, dtype=torch.bool)
        for au, term in edit.items():
            if au not in aus:
                raise StylerigError(f"the refiner's student detector does not read AU{au}; refine edits of {aus} only")
            change[:, aus.index(au)] += (term.value - _current(current_aus, au, n)) if term.absolute else term.value
            slots |= layer_mask(term.layers, self.G.slots)
        device = self.G.w_avg.device
        edited_batch = edited[None] if single else edited
        step = (edited_batch.float() - batch.float()).to(device)
        noise = latent.get("noise") if isinstance(latent, Mapping) else None
        # The whole render is refined, even for a local editor: refining through the local render
        # (refine(masks=...)) reaches further but paints texture inside the region (RESULTS §2).
        refined = self.refiner.refine(batch.float().to(device), step, change, slots, noise).to(ws.device)
        return add_on_slots(batch, refined, slots & (refined != 0).any(dim=(0, 2)).cpu(), single)

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
        given ``ws`` (e.g. an interpolation frame of ``edit``) with the latent's noise maps. A local editor
        keeps the change to the region of ``edit``'s AUs (``ws`` without ``edit`` renders as it is)."""
        if ws is None:
            ws = self.edit(latent, edit, current_aus) if edit is not None else self._ws(latent)
        if self.motion and edit is not None:
            return self._synth_motion(latent, ws, edit)
        if self.local and edit is not None:
            return self._synth_local(latent, ws, edit)
        return self._synth(latent, ws)

    def faces(self, latent: Latent) -> list:
        """One :class:`~stylerig_au.edit.local.FaceMarks` (dlib box and 68 landmarks in pixels of the R² image)
        per unedited render of the latent, found once per latent and kept. Raises StylerigError when a render
        shows no face."""
        from stylerig_au.edit.local import find_face
        from stylerig_au.imageio import to_uint8

        ws = self._ws(latent)
        batch = ws[None] if ws.ndim == 2 else ws
        key = self._key(batch)
        if key not in self._faces:
            images = self._synth(latent, batch)
            found: list | str = []
            for k, image in enumerate(images):
                face = find_face(to_uint8(image))
                if face is None:
                    found = f"no face is found in rendered face {k + 1} of {len(batch)}"
                    break
                found.append(face)
            if len(self._faces) > 64:
                self._faces.clear()
            self._faces[key] = found
            if self.motion and not isinstance(found, str):
                self._keep_render(key, images)
        if isinstance(self._faces[key], str):
            raise StylerigError(self._faces[key])
        return self._faces[key]

    def landmarks(self, latent: Latent) -> np.ndarray:
        """dlib landmarks float64 [N, 68, 2] of the latent's unedited render(s), in pixels of the R² image
        (found once per latent and kept). Raises StylerigError when a render shows no face."""
        try:
            return np.stack([face.landmarks for face in self.faces(latent)])
        except StylerigError as err:
            raise StylerigError(f"a local edit needs the face's landmarks, but {err}") from None

    @staticmethod
    def _key(ws: torch.Tensor) -> bytes:
        return hashlib.sha1(ws.detach().float().cpu().numpy().tobytes()).digest()

    def local_masks(self, latent: Latent, edit: Edit, n: int) -> torch.Tensor | None:
        """Region masks float32 [n, 1, MASK_SIDE, MASK_SIDE] in [0, 1] of ``edit``'s AUs on the latent's face
        (its unedited render's landmarks, repeated for ``n`` frames of one face), or None when the render shows
        no face (warned once per latent: its edits are then rendered without locality)."""
        from stylerig_au.edit.local import MASK_SIDE, region_mask

        try:
            marks = self.landmarks(latent)
        except StylerigError as err:  # e.g. a latent of a generator that draws no faces: the plain render is still useful
            self._warn_once(latent, f"{err}; its edits are rendered without locality")
            return None
        if len(marks) != n:
            marks = np.repeat(marks[:1], n, axis=0)
        aus = list(edit)
        return torch.from_numpy(np.stack([region_mask(m, aus, MASK_SIDE, self.G.resolution) for m in marks]))[:, None]

    def _warn_once(self, latent: Latent, message: str) -> None:
        key = self._key(self._ws(latent))
        if key not in self._warned:  # once per latent, not once per animation frame
            import warnings

            from stylerig_au.errors import StylerigWarning

            self._warned.add(key)
            warnings.warn(message, StylerigWarning, stacklevel=5)

    def _unedited_faces(self, latent: Latent) -> tuple[list, torch.Tensor] | None:
        """(:meth:`faces`, the unedited renders [N, 3, R, R]) of the latent, or None (warned once) when a
        render shows no face."""
        try:
            faces = self.faces(latent)
        except StylerigError as err:
            self._warn_once(latent, f"motion transfer needs the face's landmarks, but {err}; its edits are "
                                    f"rendered as they are")
            return None
        base = self._ws(latent)
        key = self._key(base[None] if base.ndim == 2 else base)
        if key not in self._renders:  # dropped from the few kept
            self._keep_render(key, self._synth(latent, base))
        return faces, self._renders[key]

    def _keep_render(self, key: bytes, images: torch.Tensor) -> None:
        if len(self._renders) >= 8:  # renders are big: keep a few latents (an animation reuses one)
            self._renders.clear()
        self._renders[key] = images

    def _synth_motion(self, latent: Latent, ws: torch.Tensor, edit: Edit) -> torch.Tensor:
        from stylerig_au.edit.motion import marks_in_box, transfer_motion
        from stylerig_au.imageio import to_uint8

        batch = ws[None] if ws.ndim == 2 else ws
        edited = self._synth(latent, batch)  # the motion and the interiors are kept to the region anyway
        found = self._unedited_faces(latent)
        if found is None:
            return edited
        faces, bases = found
        if len(faces) != len(batch):  # frames of one face
            faces, bases = faces[:1] * len(batch), bases[:1].expand(len(batch), -1, -1, -1)
        aus = list(edit)
        out = [transfer_motion(bases[k:k + 1], edited[k:k + 1], faces[k].landmarks,
                               marks_in_box(to_uint8(edited[k]), faces[k]), aus) for k in range(len(batch))]
        return torch.cat(out).clamp(-1, 1)

    def _synth_local(self, latent: Latent, ws: torch.Tensor, edit: Edit) -> torch.Tensor:
        from stylerig_au.edit.local import render_base, render_local

        base = self._ws(latent)
        base = base[None] if base.ndim == 2 else base
        batch = ws[None] if ws.ndim == 2 else ws
        masks = self.local_masks(latent, edit, len(batch))
        if masks is None:
            return self._synth(latent, batch)
        noise = latent.get("noise") if isinstance(latent, Mapping) else None
        noise = {k: v.to(batch.device) for k, v in (noise or {}).items()}
        key = b"".join([self._key(base), *(self._key(noise[k]) for k in sorted(noise)), str(batch.device).encode()])
        kept = self._bases.get(key)
        if kept is None:  # the unedited render; each edit then renders only itself
            kept = render_base(self.G, base.to(batch.device), noise, self.local_from)
            self._bases.clear()  # big (every blended layer's output, ~135 MiB a 1024² face): the latest latent only,
            if base.shape[0] <= KEEP_BASE_FACES:  # and only a few faces' worth
                self._bases[key] = kept
        with torch.no_grad():
            return render_local(self.G, kept, batch, masks.to(batch.device), noise).clamp(-1, 1)

    def interpolate(self, latent: Latent, edit: Edit, steps: int, current_aus: CurrentAUs | None = None) -> list[torch.Tensor]:
        """``steps`` W+ frames from the latent (first, bit-identical) to the full edit (last, bit-identical);
        only slots the edit changes differ from the input.

        Linear directions: frames are linear in W+. The mapper is not linear in ΔAU, so for a relative
        edit each frame is the mapper's own edit of ``t · ΔAU`` (t = 0 .. 1); absolute targets are
        interpolated linearly in W+ as for the directions."""
        if not isinstance(steps, int) or steps < 2:
            raise StylerigError(f"interpolation needs at least 2 steps, got {steps!r}")
        if self.method == "mapper" and isinstance(edit, Edit) and edit.is_relative:
            return [self._ws(latent).clone() if i == 0 else self.edit(latent, edit * (i / (steps - 1)))
                    for i in range(steps)]
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
