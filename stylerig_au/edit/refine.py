"""Polish an edit for one face: optimise its Δw+ against the student AU detector (slow, tighter edits).

The linear directions and the mapper give an edit in one pass, the same recipe for every face. A
refined edit starts from that Δw+ and takes ``steps`` Adam steps on this face alone, with the terms
the mapper is trained with (:mod:`stylerig_au.edit.mapper_train`), all read by the student detector:

* target: (student AU of the edit − clamp(student AU of the face + asked change, 0, 5))² over the asked AUs;
* keep: mean (student change of every other AU)², weight ``keep``;
* outside: LPIPS between face and edit outside the face regions of the asked AUs, weight ``outside``;
* identity: the distance between face and edit of the face network ``identity_net`` (SFace by default,
  or dlib's descriptor: :mod:`stylerig_au.identity_net`), weight ``identity``;
* size: mean ((Δw+ − the starting Δw+) / w's spread)², weight ``size``;
* colour (off by default): mean squared difference of the 8×-average-pooled face and edit inside the
  asked AUs' regions, weight ``colour``: the outside term does not look there, and without it some
  mouth edits come out with lipstick-red lips or a white beard;
* geometry (off by default), weight ``geometry``: OpenFace's geometry term of each asked AU, read through
  the differentiable landmark net (:class:`~stylerig_au.au.landmark_net.GeometryReader`), must move by at
  least its natural share of the asked change (``reader.share`` × change); the squared shortfall is
  the loss. Texture (a beard, glasses, a furrow) cannot pay it: only moved features do.

Each step renders the edit at full size and runs the student, LPIPS and the face network backwards:
about 1.5 s a step for one 1024² edit on a 2-core CPU (~2.5 s per edit at batch 6, which is memory-bound
there), so 20 steps take ~30 s for one edit (the one-pass edit takes ~0.3 s). Given region masks, each
step renders and judges the edit as a local edit (:func:`stylerig_au.edit.local.render_local`, the
unedited render kept from the first step); OpenFace then reads more reach, but the optimisation paints texture inside the region
(RESULTS §2), so :class:`~stylerig_au.edit.Editor` refines the whole render and only shows it locally.
``experiments/edit_ceiling.py [--local]`` measures what it buys with OpenFace.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from stylerig_au.errors import StylerigError
from stylerig_au.identity_net import IDENTITY_NETS


@dataclass(frozen=True)
class RefineSettings:
    """Steps and loss weights of a refinement (the defaults are those ``edit_ceiling.py`` measured)."""

    steps: int = 20
    lr: float = 0.05  # Adam step, in units of w's per-dimension spread
    keep: float = 3.0
    outside: float = 4.0
    identity: float = 4.0
    size: float = 0.05
    colour: float = 0.0
    geometry: float = 0.0
    side: int = 256  # the student, LPIPS and the face network read the images at this side
    identity_net: str = "sface"  # a key of stylerig_au.identity_net.IDENTITY_NETS (dlib judges the evaluations)

    def check(self) -> None:
        if self.steps < 0:
            raise StylerigError(f"refine steps must be 0 or more, got {self.steps}")
        if self.lr <= 0:
            raise StylerigError(f"refine learning rate must be positive, got {self.lr}")
        if min(self.keep, self.outside, self.identity, self.size, self.colour, self.geometry) < 0:
            raise StylerigError("refine loss weights must be 0 or more")
        if self.identity_net not in IDENTITY_NETS:
            raise StylerigError(f"refine identity net must be one of {', '.join(IDENTITY_NETS)}, got {self.identity_net!r}")
        if self.side < 64:
            raise StylerigError(f"refine side must be at least 64 (the student needs it), got {self.side}")


def w_spread(G, num_samples: int = 4096, seed: int = 0) -> torch.Tensor:
    """Per-dimension standard deviation float32 [w_dim] of w = G.mapping(z) over ``num_samples`` seeded z."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = G.mapping(torch.randn(num_samples, G.z_dim, generator=gen).to(G.w_avg.device))
    return w.std(dim=0).float()


class EditRefiner:
    """Refine edits of latents for one generator (module docstring).

    Args:
        G: the generator; ``student``: a :class:`~stylerig_au.au.student.StudentAUNet` (or anything
            mapping float [N, 3, S, S] in [-1, 1] to intensities [N, len(student.aus)]) with an ``aus`` list;
        w_std: float [w_dim], the spread of G's w (:func:`w_spread`, or a mapper's ``w_std``);
        settings: :class:`RefineSettings`;
        lpips, face_net: the LPIPS model and the identity network (:class:`~stylerig_au.identity_net.IdentityNet`,
            ``settings.identity_net``), loaded from the pretrained assets when their weight is non-zero
            and they are not given;
        progress: show a progress bar over the steps of each refinement.
        geometry_reader: the :class:`~stylerig_au.au.landmark_net.GeometryReader` of the geometry term,
            loaded (the bundled landmark net, OpenFace's model) when its weight is non-zero and it is not given.
    """

    def __init__(self, G, student, w_std: torch.Tensor, settings: RefineSettings = RefineSettings(),
                 lpips=None, face_net=None, progress: bool = False, geometry_reader=None) -> None:
        settings.check()
        self.G, self.student, self.settings = G, student, settings
        device = G.w_avg.device
        self.w_std = w_std.detach().float().to(device)
        if self.w_std.shape != (G.w_dim,):
            raise StylerigError(f"w_std must have shape [{G.w_dim}], got {list(self.w_std.shape)}")
        if settings.outside > 0 and lpips is None:
            from stylerig_au.perceptual import load_lpips

            lpips = load_lpips(device=device)
        if settings.identity > 0 and face_net is None:
            from stylerig_au.identity_net import load_identity_net

            face_net = load_identity_net(settings.identity_net, device=device)
        if settings.geometry > 0 and geometry_reader is None:
            from stylerig_au.au.landmark_net import load_geometry_reader

            geometry_reader = load_geometry_reader(device=device)
        if geometry_reader is not None and not set(self.aus) <= set(geometry_reader.aus):
            raise StylerigError(f"the geometry reader reads AU {geometry_reader.aus}, not every AU the student reads ({self.aus})")
        self.lpips, self.face_net, self.progress = lpips, face_net, progress
        self.geometry_reader = geometry_reader

    @property
    def aus(self) -> list[int]:
        """The AUs the student reads: the columns of ``change`` in :meth:`refine`."""
        return [int(a) for a in self.student.aus]

    def refine(self, ws: torch.Tensor, step: torch.Tensor, change: torch.Tensor, slots: torch.Tensor | None = None,
               noise: dict[str, torch.Tensor] | None = None,
               on_step: Callable[[int, dict[str, float]], None] | None = None,
               masks: torch.Tensor | None = None, local_from: int | None = None) -> torch.Tensor:
        """The refined Δw+ float32 [N, num_ws, w_dim] of the edits ``ws + step``, after ``settings.steps`` steps.

        Args:
            ws: latents [N, num_ws, w_dim]; ``step``: their starting Δw+ (same shape).
            change: float [N, len(aus)], the asked change of each AU (columns in :attr:`aus` order);
                0 means "keep this AU as it is". A row without any asked change is returned as it came.
            slots: bool or float [num_ws], the W+ slots the refinement may move (default: all).
            noise: the latent's noise maps (:func:`stylerig_au.invert.render`), if it has any.
            on_step: called as on_step(step, losses) after each step, losses as floats.
            masks: optional float [N, 1, H, W] in [0, 1], each edit's face region
                (:func:`stylerig_au.edit.local.region_mask`): the edits are then rendered and judged as local
                edits (:func:`stylerig_au.edit.local.render_local`, blending from ``local_from`` up), the
                way a local :class:`~stylerig_au.edit.Editor` shows them.
        """
        return self.refine_path(ws, step, change, [self.settings.steps], slots, noise, on_step,
                                masks, local_from)[self.settings.steps]

    def refine_path(self, ws: torch.Tensor, step: torch.Tensor, change: torch.Tensor, at: list[int],
                    slots: torch.Tensor | None = None, noise: dict[str, torch.Tensor] | None = None,
                    on_step: Callable[[int, dict[str, float]], None] | None = None,
                    masks: torch.Tensor | None = None, local_from: int | None = None,
                    colour_reference: torch.Tensor | None = None) -> dict[int, torch.Tensor]:
        """The Δw+ of one refinement after each step count in ``at`` ({count: [N, num_ws, w_dim]}).

        One run of ``max(at)`` steps (``settings.steps`` is not used): the Δw+ after k steps is what
        :meth:`refine` returns with ``steps=k``, so several step counts cost one run. ``colour_reference``:
        optional images [N, 3, H, W] in [-1, 1] the colour term compares each edit with inside its region
        (default: the unedited face), e.g. the edit's motion transfer (:mod:`stylerig_au.edit.motion`),
        which has the edit's geometry and the face's own skin. Other arguments as in :meth:`refine`.
        """
        from stylerig_au.edit.mapper_train import MAX_INTENSITY, colour_difference, region_mask, to_side
        from stylerig_au.identity_net import identity_loss, identity_reference
        from stylerig_au.invert import render

        s = self.settings
        if ws.ndim != 3 or step.shape != ws.shape:
            raise StylerigError(f"refine needs ws and step of the same shape [N, num_ws, w_dim], got {list(ws.shape)} "
                                f"and {list(step.shape)}")
        n, aus = ws.shape[0], self.aus
        if change.shape != (n, len(aus)):
            raise StylerigError(f"refine needs one change per student AU: shape [{n}, {len(aus)}], got {list(change.shape)}")
        if masks is not None and (masks.ndim != 4 or masks.shape[:2] != (n, 1)):
            raise StylerigError(f"refine needs one mask per edit, shape [{n}, 1, H, W], got {list(masks.shape)}")
        if colour_reference is not None and (colour_reference.ndim != 4 or colour_reference.shape[:2] != (n, 3)):
            raise StylerigError(f"refine needs one colour reference image per edit, shape [{n}, 3, H, W], "
                                f"got {list(colour_reference.shape)}")
        device = ws.device
        ws, step = ws.detach().float(), step.detach().float()
        change = change.detach().float().to(device)
        on = change != 0
        rows = on.any(dim=1).nonzero().flatten()
        if not at or min(at) < 0:
            raise StylerigError(f"refine step counts must be 0 or more, got {at}")
        total_steps = max(at)
        snapshots: dict[int, torch.Tensor] = {}
        if total_steps == 0 or rows.numel() == 0:
            return {k: step.clone() for k in at}
        ws_r, step_r, change_r, on_r = ws[rows], step[rows], change[rows], on[rows]
        slot_w = torch.ones(ws.shape[1], device=device) if slots is None else slots.to(device).float()
        noise = {k: v.to(device) for k, v in (noise or {}).items()}

        masks_r = None if masks is None else masks[rows].to(device).float()

        kept = None  # a local refinement's unedited render, kept: each step renders only the edit
        if masks_r is not None:
            from stylerig_au.edit.local import DEFAULT_FROM_RESOLUTION, render_base, render_local

            kept = render_base(self.G, ws_r, noise, local_from or DEFAULT_FROM_RESOLUTION)

        def synth(x: torch.Tensor) -> torch.Tensor:
            if kept is None:
                return to_side(render(self.G, x, noise), s.side)
            return to_side(render_local(self.G, kept, x, masks_r, noise), s.side)

        with torch.no_grad():  # a kept local base is that render already
            base = to_side((kept.images if kept is not None else render(self.G, ws_r, noise)).clamp(-1, 1), s.side)
            base_aus = self.student(base)
            colour_ref = base if colour_reference is None else to_side(colour_reference[rows].to(device).float(), s.side)
        target = (base_aus + change_r).clamp(0, MAX_INTENSITY)
        if s.geometry > 0:
            reader = self.geometry_reader
            g_cols = torch.tensor([reader.aus.index(a) for a in aus], device=device)
            with torch.no_grad():
                base_geo = reader(base)[:, g_cols].float()
            # the geometry each asked AU should carry: its natural share of the change (unknown shares ask nothing)
            geo_want = torch.nan_to_num(reader.share[g_cols].float().to(device)) * change_r
        keep_mask = 1 - region_mask([[aus[int(j)] for j in row.nonzero().flatten()] for row in on_r], s.side, device=device)
        identity_base = identity_reference(self.face_net, base) if s.identity > 0 else None  # crops and features, once
        outside_base = None  # the masked face's LPIPS features, computed once when the model allows it
        if s.outside > 0 and hasattr(self.lpips, "distance_to_features"):
            with torch.no_grad():
                outside_base = self.lpips.features(base * keep_mask)
        u = torch.zeros_like(step_r, requires_grad=True)
        opt = torch.optim.Adam([u], lr=s.lr)

        def snapshot() -> torch.Tensor:
            out = step.clone()
            out[rows] = step_r + (u.detach() * slot_w[None, :, None] * self.w_std)
            return out

        if 0 in at:
            snapshots[0] = step.clone()
        bar = tqdm(total=total_steps, desc="refine edit", unit="step", leave=False, disable=not self.progress)
        for i in range(total_steps):
            move = u * slot_w[None, :, None] * self.w_std
            edit = synth(ws_r + step_r + move)
            read = self.student(edit)
            losses = {"target": ((read - target) ** 2 * on_r).sum() / on_r.sum(),
                      "keep": ((read - base_aus) ** 2 * ~on_r).sum() / (~on_r).sum().clamp_min(1),
                      "size": u.pow(2).mean()}
            total = losses["target"] + s.keep * losses["keep"] + s.size * losses["size"]
            if s.outside > 0:
                masked = edit.clamp(-1, 1) * keep_mask
                losses["outside"] = (self.lpips(masked, base * keep_mask) if outside_base is None
                                     else self.lpips.distance_to_features(masked, outside_base)).mean()
                total = total + s.outside * losses["outside"]
            if s.colour > 0:
                losses["colour"] = colour_difference(edit, colour_ref, 1 - keep_mask)
                total = total + s.colour * losses["colour"]
            if s.geometry > 0:
                moved = self.geometry_reader(edit)[:, g_cols].float() - base_geo
                shortfall = torch.relu(geo_want.sign() * (geo_want - moved)) * on_r
                losses["geometry"] = shortfall.pow(2).sum() / on_r.sum()
                total = total + s.geometry * losses["geometry"]
            if s.identity > 0:
                losses["identity"] = identity_loss(self.face_net, edit, identity_base).mean()
                total = total + s.identity * losses["identity"]
            # only u's gradient: no weight gradients are computed or left on G, the student or the nets
            (u.grad,) = torch.autograd.grad(total, [u])
            opt.step()
            values = {k: float(v.detach()) for k, v in losses.items()}
            bar.update(1)
            bar.set_postfix(target=f"{values['target']:.3f}", keep=f"{values['keep']:.3f}")
            if on_step is not None:
                on_step(i, values)
            if i + 1 in at:
                snapshots[i + 1] = snapshot()
        bar.close()
        return snapshots
