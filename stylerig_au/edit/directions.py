"""Linear AU directions in W: one unit direction per AU, the W+ slots it may touch, and its scale.

``AU(12, +2)`` moves a latent by ``2 * scale[12] * direction[12]`` on the slots of AU12's mask
(scaled by soft mask weights; restricted further by the edit's layers; never on unused slots).

File format (``torch.save`` of a dict; read with :meth:`LinearDirections.load`, weights-only safe):

==================  ==========================================================================
``format``          ``'stylerig-au/linear-directions'``
``format_version``  1
``generator``       generator id (``G.name``); ``w_dim``, ``num_ws``: its W+ shape
``slots``           one dict per W+ slot: ``index``, ``resolution``, ``group``, ``used``
``aus``             list of AU numbers, the row order of the tensors below
``directions``      float32 [K, w_dim], unit rows
``slot_masks``      float32 [K, num_ws] in [0, 1]: which slots each AU moves (soft weights allowed)
``scales``          float32 [K]: W units per AU intensity unit
``method``          how they were learned (e.g. 'manual', 'regression', 'conditional(...)')
``created``         UTC ISO time; ``meta``: a dict of plain extra information
==================  ==========================================================================
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from stylerig_au.au.vocab import AU_NUMBERS, au_number
from stylerig_au.edit.spec import Edit, layer_mask
from stylerig_au.errors import StylerigError
from stylerig_au.models.protocol import StyleSlot

FORMAT = "stylerig-au/linear-directions"
FORMAT_VERSION = 1

CurrentAUs = Mapping[int | str, float | torch.Tensor] | torch.Tensor
"""Current AU intensities: {AU: float or [N] tensor}, or a tensor [len(AU_NUMBERS)] / [N, len(AU_NUMBERS)]
with columns in :data:`stylerig_au.au.vocab.AU_NUMBERS` order (what the OpenFace detector returns)."""


class LinearDirections:
    """Per-AU linear directions for one generator (treat as immutable).

    Args:
        directions: AU -> direction [w_dim] (normalised to unit length here).
        slots: the generator's W+ slots (``G.slots``).
        generator: the generator id (``G.name``).
        masks: AU -> slot mask [num_ws] (bool or float in [0, 1]); default: every used slot.
        scales: AU -> W units per AU intensity unit; default 1.0.
        method: how they were made; ``created``: ISO time (default now); ``meta``: plain extras.

    Raises:
        StylerigError: unknown AU, wrong shapes, a zero direction, a negative/non-finite scale.
    """

    def __init__(self, directions: Mapping[int | str, torch.Tensor], *, slots: Sequence[StyleSlot], generator: str,
                 masks: Mapping[int | str, torch.Tensor] | None = None, scales: Mapping[int | str, float] | None = None,
                 method: str = "manual", created: str | None = None, meta: dict[str, Any] | None = None) -> None:
        self.slots = tuple(slots)
        self.generator = str(generator)
        self.num_ws = len(self.slots)
        if not directions:
            raise StylerigError("LinearDirections needs at least one AU direction")
        self.aus: tuple[int, ...] = tuple(sorted(au_number(a) for a in directions))
        rows = {au_number(a): torch.as_tensor(d, dtype=torch.float32).detach().cpu().reshape(-1) for a, d in directions.items()}
        self.w_dim = rows[self.aus[0]].numel()
        dirs = torch.zeros(len(self.aus), self.w_dim)
        for i, au in enumerate(self.aus):
            d = rows[au]
            if d.numel() != self.w_dim:
                raise StylerigError(f"AU{au} direction has {d.numel()} values, others {self.w_dim}")
            norm = d.double().norm()
            if not torch.isfinite(norm) or norm < 1e-12:
                raise StylerigError(f"AU{au} direction is zero or not finite")
            dirs[i] = (d.double() / norm).float()
        self.directions = dirs
        self.used = torch.tensor([s.used for s in self.slots], dtype=torch.bool)
        mask_in = {au_number(a): m for a, m in (masks or {}).items()}
        for au in mask_in:
            if au not in self.aus:
                raise StylerigError(f"mask given for AU{au}, which has no direction")
        self.slot_masks = torch.zeros(len(self.aus), self.num_ws)
        for i, au in enumerate(self.aus):
            m = torch.as_tensor(mask_in[au]).detach().cpu().reshape(-1).float() if au in mask_in else torch.ones(self.num_ws)
            if m.numel() != self.num_ws or not bool(((m >= 0) & (m <= 1)).all()):
                raise StylerigError(f"AU{au} slot mask must have {self.num_ws} values in [0, 1]")
            self.slot_masks[i] = m * self.used
        scale_in = {au_number(a): float(s) for a, s in (scales or {}).items()}
        self.scales = torch.tensor([scale_in.get(au, 1.0) for au in self.aus], dtype=torch.float32)
        if not bool(torch.isfinite(self.scales).all() & (self.scales > 0).all()):
            raise StylerigError("AU scales must be finite and positive")
        self.method = method
        self.created = created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.meta = dict(meta or {})

    @classmethod
    def for_generator(cls, G, directions: Mapping[int | str, torch.Tensor], **kwargs: Any) -> "LinearDirections":
        """Directions for generator ``G`` (takes its ``slots`` and ``name``); kwargs as the constructor."""
        dirs = cls(directions, slots=G.slots, generator=G.name, **kwargs)
        dirs.check(G)
        return dirs

    # --- lookup
    def index(self, au: int | str) -> int:
        number = au_number(au)
        if number not in self.aus:
            raise StylerigError(f"no direction for AU{number} here; these directions cover AU {', '.join(map(str, self.aus))}")
        return self.aus.index(number)

    def direction(self, au: int | str) -> torch.Tensor:
        """Unit direction float32 [w_dim]."""
        return self.directions[self.index(au)].clone()

    def mask(self, au: int | str) -> torch.Tensor:
        """Slot weights float32 [num_ws] in [0, 1] (0 on unused slots)."""
        return self.slot_masks[self.index(au)].clone()

    def scale(self, au: int | str) -> float:
        """W units per AU intensity unit."""
        return float(self.scales[self.index(au)])

    def __repr__(self) -> str:
        return (f"LinearDirections(generator={self.generator!r}, aus={list(self.aus)}, w_dim={self.w_dim}, "
                f"num_ws={self.num_ws}, method={self.method!r})")

    def check(self, G) -> None:
        """Raise StylerigError unless these directions were made for generator ``G``'s W+ space."""
        name = getattr(G, "name", "?")
        if name != self.generator or G.w_dim != self.w_dim or G.num_ws != self.num_ws:
            raise StylerigError(f"these AU directions are for {self.generator!r} (W+ {self.num_ws}x{self.w_dim}), "
                                f"not {name!r} (W+ {G.num_ws}x{G.w_dim}); learn directions for it first")

    # --- editing
    def apply(self, ws: torch.Tensor, edit: Edit, current_aus: CurrentAUs | None = None) -> torch.Tensor:
        """Edit latents: ws [N, num_ws, w_dim] or [num_ws, w_dim] -> a new tensor of the same shape and dtype.

        Relative terms move by ``value * scale`` along the AU's direction; absolute targets move by
        ``(target - current) * scale``, so they need ``current_aus`` (one linear step; re-measure and
        apply again to close any remaining gap). Slots outside the AU's mask, outside the edit's
        layers, or unused by the generator are copied bit for bit.

        Raises:
            StylerigError: wrong shape, an AU without a direction, a target without ``current_aus``.
        """
        if not isinstance(edit, Edit):
            raise StylerigError(f"expected an Edit (e.g. AU(12, 2)), got {type(edit).__name__}")
        batch, single = as_batch(ws, self.num_ws, self.w_dim)
        n = batch.shape[0]
        delta = torch.zeros(n, self.num_ws, self.w_dim, dtype=torch.float32, device=ws.device)
        touched = torch.zeros(self.num_ws, dtype=torch.bool)
        for au, term in edit.items():
            i = self.index(au)
            if term.absolute:
                amount = term.value - _current(current_aus, au, n).to(ws.device)
            else:
                amount = torch.full((n,), term.value, dtype=torch.float32, device=ws.device)
            weights = self.slot_masks[i] * layer_mask(term.layers, self.slots)
            touched |= weights > 0
            step = (amount * self.scales[i].item())[:, None, None] * weights.to(ws.device)[None, :, None]
            delta += step * self.directions[i].to(ws.device)[None, None, :]
        return add_on_slots(batch, delta, touched, single)

    # --- files
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "generator": self.generator,
            "w_dim": self.w_dim, "num_ws": self.num_ws,
            "slots": [{"index": s.index, "resolution": s.resolution, "group": s.group, "used": s.used} for s in self.slots],
            "aus": list(self.aus), "directions": self.directions.clone(), "slot_masks": self.slot_masks.clone(),
            "scales": self.scales.clone(), "method": self.method, "created": self.created, "meta": dict(self.meta),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the file format above atomically; returns the path."""
        from stylerig_au.fileio import atomic_torch_save

        path = Path(path)
        atomic_torch_save(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, G=None) -> "LinearDirections":
        """Read a directions file; with ``G``, also check it belongs to that generator.

        Raises:
            StylerigError: missing file, not a directions file, newer format, or another generator/shape.
        """
        from stylerig_au.fileio import load_record

        path = Path(path)
        blob = load_record(path, FORMAT, FORMAT_VERSION, "directions file", "run `stylerig-au learn-directions` to make one")
        try:
            slots = [StyleSlot(int(s["index"]), int(s["resolution"]), s["group"], bool(s["used"])) for s in blob["slots"]]
            aus = [int(a) for a in blob["aus"]]
            dirs = cls({a: blob["directions"][i] for i, a in enumerate(aus)}, slots=slots, generator=blob["generator"],
                       masks={a: blob["slot_masks"][i] for i, a in enumerate(aus)},
                       scales={a: float(blob["scales"][i]) for i, a in enumerate(aus)},
                       method=blob.get("method", "?"), created=blob.get("created"), meta=blob.get("meta"))
        except (KeyError, TypeError, IndexError, ValueError) as err:
            raise StylerigError(f"{path}: damaged directions file ({type(err).__name__}: {err})") from None
        if dirs.w_dim != blob["w_dim"] or dirs.num_ws != blob["num_ws"]:
            raise StylerigError(f"{path}: damaged directions file (shapes disagree with w_dim/num_ws)")
        if G is not None:
            try:
                dirs.check(G)
            except StylerigError as err:
                raise StylerigError(f"{path}: {err}") from None
        return dirs


def as_batch(ws: torch.Tensor, num_ws: int, w_dim: int) -> tuple[torch.Tensor, bool]:
    """ws [N, num_ws, w_dim] or [num_ws, w_dim] -> (a [N, num_ws, w_dim] view, whether it was a single latent).

    Raises:
        StylerigError: any other shape.
    """
    single = ws.ndim == 2
    batch = ws[None] if single else ws
    if batch.ndim != 3 or tuple(batch.shape[1:]) != (num_ws, w_dim):
        raise StylerigError(f"expected ws of shape [N, {num_ws}, {w_dim}] or [{num_ws}, {w_dim}], got {list(ws.shape)}")
    return batch, single


def add_on_slots(batch: torch.Tensor, delta: torch.Tensor, touched: torch.Tensor, single: bool) -> torch.Tensor:
    """A copy of ``batch`` [N, num_ws, w_dim] with float32 ``delta`` (same shape) added on the slots where the
    bool ``touched`` [num_ws] is set, in float32 then back to the latents' dtype; every other slot is copied
    bit for bit. Returns [num_ws, w_dim] when ``single``."""
    out = batch.clone()
    idx = touched.nonzero().flatten().to(batch.device)
    if idx.numel():
        out[:, idx] = (batch[:, idx].float() + delta[:, idx]).to(batch.dtype)
    return out[0] if single else out


def _current(current_aus: CurrentAUs | None, au: int, n: int) -> torch.Tensor:
    """Current intensity of ``au`` as float32 [n]."""
    if current_aus is None:
        raise StylerigError(f"AU{au} has an absolute target; pass the current AU intensities (current_aus=, "
                            "e.g. from the AU detector) or use a relative change")
    if isinstance(current_aus, torch.Tensor):
        t = current_aus.detach().float().cpu()
        if t.shape[-1] != len(AU_NUMBERS) or t.ndim > 2:
            raise StylerigError(f"current_aus tensor must be [{len(AU_NUMBERS)}] or [N, {len(AU_NUMBERS)}] "
                                f"(columns AU {', '.join(map(str, AU_NUMBERS))}), got {list(t.shape)}")
        value = t[..., AU_NUMBERS.index(au)]
    else:
        found = [v for k, v in current_aus.items() if au_number(k) == au]
        if not found:
            raise StylerigError(f"AU{au} has an absolute target but current_aus has no AU{au}")
        value = torch.as_tensor(found[0], dtype=torch.float32).detach().cpu()
    value = value.reshape(-1)
    if value.numel() == 1:
        value = value.expand(n)
    if value.numel() != n:
        raise StylerigError(f"current_aus gives {value.numel()} values for AU{au}, but there are {n} latents")
    return value.float()


def conditional(directions: LinearDirections, keep: Iterable[int | str | torch.Tensor] | None = None,
                aus: Iterable[int | str] | None = None) -> LinearDirections:
    """Make AU directions conditional: each one orthogonal to what it should not move.

    Each AU ``a`` (default: every AU) has its direction projected off the span of ``keep``: AU numbers
    (their original directions; ``a`` itself is skipped) and/or nuisance direction tensors ([w_dim] or
    [M, w_dim], e.g. pose or age). ``keep=None`` keeps every other AU. The basis is orthonormalised by
    QR (Gram-Schmidt) in float64. The scale is divided by ``d · d'`` so that, for an AU read out linearly
    along its original direction ``d``, one intensity unit along the new ``d'`` is still one unit.

    Raises:
        StylerigError: an AU direction that lies (almost) inside the span it must avoid.
    """
    keep_items = list(keep) if keep is not None else list(directions.aus)
    keep_aus = [au_number(k) for k in keep_items if not isinstance(k, torch.Tensor)]
    nuisance = [k.detach().double().cpu().reshape(-1, k.shape[-1]) for k in keep_items if isinstance(k, torch.Tensor)]
    if any(n.shape[1] != directions.w_dim for n in nuisance):
        raise StylerigError(f"nuisance directions must be [w_dim] or [M, w_dim] with w_dim = {directions.w_dim}")
    for k in keep_aus:
        directions.index(k)
    targets = [au_number(a) for a in aus] if aus is not None else list(directions.aus)
    new_dirs, new_scales = {}, {}
    for au in directions.aus:
        d = directions.direction(au).double()
        scale = directions.scale(au)
        if au in targets:
            basis = [directions.direction(k).double()[None] for k in keep_aus if k != au] + nuisance
            if basis:
                q, r = torch.linalg.qr(torch.cat(basis).T)
                q = q[:, r.diagonal().abs() > 1e-8]
                projected = d - q @ (q.T @ d)
                norm = projected.norm()
                if norm < 1e-6:
                    raise StylerigError(f"AU{au} direction lies in the span of the directions it must avoid; "
                                        "drop some of them from keep")
                projected = projected / norm
                scale = scale / float(projected @ d)
                d = projected
        new_dirs[au], new_scales[au] = d.float(), scale
    kept = ", ".join([f"AU{k}" for k in keep_aus] + [f"{len(nuisance)} nuisance"] * bool(nuisance))
    return LinearDirections(new_dirs, slots=directions.slots, generator=directions.generator,
                            masks={a: directions.mask(a) for a in directions.aus}, scales=new_scales,
                            method=f"conditional({directions.method}; keep {kept or 'nothing'})",
                            meta={**directions.meta, "conditioned_from_created": directions.created})


def load_default_directions(G, path: str | os.PathLike | None = None) -> LinearDirections:
    """The learned AU directions for generator ``G``: ``path`` if given, else the ones bundled for it.

    Raises:
        StylerigError: no directions are bundled for this generator (learn them with
            ``stylerig-au learn-directions``), or the file belongs to another generator.
    """
    from stylerig_au import pretrained

    name = f"au-directions-{G.name}"
    if path is None and name not in pretrained.OWN_ASSETS:
        raise StylerigError(f"no AU directions are bundled for generator {G.name!r}; learn them with "
                            "`stylerig-au learn-directions --generator ...` and pass the file with --directions")
    return LinearDirections.load(pretrained.own_path(name, explicit=path) if path is None else path, G)
