"""The AU-conditioned mapper: M(w+, ΔAU) -> Δw+, a small network that makes latent-dependent AU edits.

A linear direction moves every face the same way; the mapper adds a correction that depends on the
face, trained (:mod:`stylerig_au.edit.mapper_train`) so that the student AU detector sees the
requested AU changes and nothing else move. Its output on the editable slots is

    Δw+ = Σ_k ΔAU_k · L_k  +  R(x, ΔAU) − R(x, 0)

* ``L_k`` [E, w_dim]: a per-AU, per-slot linear part, initialised from the linear directions
  (``scale_k · mask_k · d_k``), so an untrained mapper edits exactly like them;
* ``R``: an MLP on ``x`` (the mean w of the editable slots, normalised by the generator's w statistics)
  and ``ΔAU / delta_scale``, each through its own input layer (so the few ΔAU inputs weigh as much as
  the 512 of w), whose last layer starts at zero. Subtracting ``R(x, 0)`` makes a zero
  edit an exact no-op, whatever the weights.

Slots outside the editable ones (the union of the linear directions' slot masks) never change.

``input_gain`` [A] (ones until :mod:`stylerig_au.edit.mapper_calibrate` sets it) multiplies ΔAU before
everything above: a trained mapper makes smaller (or larger) changes than asked, by a factor that
depends on the AU, and the gains rescale the requested change so that OpenFace measures it.

File format (``torch.save`` of a dict, written atomically; read with :func:`load_mapper`):
``format`` = ``"stylerig-au/au-mapper"``, ``format_version`` = 1, ``generator``, ``config``
(:class:`MapperConfig` as a dict), ``state`` (the module's tensors, float32), ``created``, ``meta``
(training settings, data and final losses: what the card shows), and optionally ``input_gain`` (a list
of A floats, one per AU in ``config.aus`` order; absent means all ones). MLP weight matrices are
stored as float16.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylerig_au.au.vocab import au_number
from stylerig_au.errors import StylerigError

FORMAT = "stylerig-au/au-mapper"
FORMAT_VERSION = 1

@dataclass(frozen=True)
class MapperConfig:
    """Shape of an :class:`AUMapper`.

    Attributes:
        aus: AU numbers, in the order of the ΔAU input.
        num_ws, w_dim: the generator's W+ shape.
        slots: indices of the editable W+ slots (E of them).
        hidden: width of the MLP trunk; ``depth`` hidden layers.
        bottleneck: width of the layer before the [E * w_dim] output (keeps the file small).
        delta_scale: ΔAU is divided by this before entering the MLP.
    """

    aus: tuple[int, ...]
    num_ws: int
    w_dim: int
    slots: tuple[int, ...]
    hidden: int = 256
    depth: int = 2
    bottleneck: int = 128
    delta_scale: float = 0.5

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "MapperConfig":
        return cls(aus=tuple(int(a) for a in d["aus"]), num_ws=int(d["num_ws"]), w_dim=int(d["w_dim"]),
                   slots=tuple(int(s) for s in d["slots"]), hidden=int(d["hidden"]), depth=int(d["depth"]),
                   bottleneck=int(d["bottleneck"]), delta_scale=float(d["delta_scale"]))


class AUMapper(nn.Module):
    """M(ws [N, num_ws, w_dim], delta [N, A]) -> Δw+ [N, num_ws, w_dim] (zero outside ``config.slots``)."""

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        if not config.aus or not config.slots:
            raise StylerigError("an AU mapper needs at least one AU and one editable slot")
        if config.depth < 1 or not config.delta_scale > 0:
            raise StylerigError(f"an AU mapper needs depth >= 1 and delta_scale > 0, got {config.depth}, {config.delta_scale}")
        if any(not 0 <= s < config.num_ws for s in config.slots):
            raise StylerigError(f"mapper slots must lie in 0..{config.num_ws - 1}, got {list(config.slots)}")
        self.config = config
        a, e, d = len(config.aus), len(config.slots), config.w_dim
        self.linear = nn.Parameter(torch.zeros(a, e, d))
        self.register_buffer("w_mean", torch.zeros(d))
        self.register_buffer("w_std", torch.ones(d))
        self.w_in = nn.Linear(d, config.hidden)
        self.delta_in = nn.Linear(a, config.hidden, bias=False)
        layers: list[nn.Module] = [nn.LeakyReLU(0.2)]
        for _ in range(config.depth - 1):
            layers += [nn.Linear(config.hidden, config.hidden), nn.LeakyReLU(0.2)]
        layers += [nn.Linear(config.hidden, config.bottleneck), nn.LeakyReLU(0.2)]
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(config.bottleneck, e * d)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("slot_index", torch.tensor(config.slots, dtype=torch.long))
        # not in the state dict: files store it beside the state, and training never changes it
        self.register_buffer("input_gain", torch.ones(a), persistent=False)

    @property
    def aus(self) -> list[int]:
        return list(self.config.aus)

    def check_inputs(self, ws: torch.Tensor, delta: torch.Tensor) -> None:
        c = self.config
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (c.num_ws, c.w_dim):
            raise StylerigError(f"the AU mapper expects ws of shape [N, {c.num_ws}, {c.w_dim}], got {list(ws.shape)}")
        if delta.ndim != 2 or delta.shape != (ws.shape[0], len(c.aus)):
            raise StylerigError(f"the AU mapper expects ΔAU of shape [{ws.shape[0]}, {len(c.aus)}] "
                                f"(AU {', '.join(map(str, c.aus))}), got {list(delta.shape)}")

    def _residual(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        h = self.trunk(self.w_in(x) + self.delta_in(delta / self.config.delta_scale))
        return self.out(h).view(x.shape[0], len(self.config.slots), self.config.w_dim)

    def slot_delta(self, ws: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Δw+ on the editable slots only: float32 [N, E, w_dim] (E = ``len(config.slots)``)."""
        self.check_inputs(ws, delta)
        delta = delta.to(torch.float32) * self.input_gain
        x = (ws.index_select(1, self.slot_index).to(torch.float32).mean(dim=1) - self.w_mean) / self.w_std
        linear = torch.einsum("na,aed->ned", delta, self.linear)
        return linear + self._residual(x, delta) - self._residual(x, torch.zeros_like(delta))

    def forward(self, ws: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Δw+ float32 [N, num_ws, w_dim] for latents ws [N, num_ws, w_dim] and AU changes delta [N, A]
        (intensity units, columns in :attr:`aus` order; scaled by ``input_gain`` first). Zero where
        ``delta`` is zero and outside the slots."""
        step = self.slot_delta(ws, delta)
        full = ws.new_zeros(ws.shape, dtype=torch.float32)
        return full.index_copy(1, self.slot_index, step)

    def au_index(self, au: int | str) -> int:
        number = au_number(au)
        if number not in self.config.aus:
            raise StylerigError(f"the AU mapper does not cover AU{number}; it covers AU {', '.join(map(str, self.config.aus))}")
        return self.config.aus.index(number)

    def input_gains(self) -> dict[int, float]:
        """The per-AU ΔAU multipliers as ``{AU: gain}``, in :attr:`aus` order."""
        return dict(zip(self.aus, (float(g) for g in self.input_gain.cpu())))

    def set_input_gain(self, gains: dict[int, float] | torch.Tensor) -> None:
        """Set the per-AU ΔAU multipliers: a tensor [A] in :attr:`aus` order, or ``{AU: gain}`` (AUs not
        named keep their gain). Raises StylerigError for a gain that is not finite and > 0."""
        new = self.input_gain.detach().clone().cpu()
        if isinstance(gains, torch.Tensor):
            if gains.shape != new.shape:
                raise StylerigError(f"the AU mapper needs {len(new)} input gains, got shape {list(gains.shape)}")
            new = gains.detach().float().cpu().clone()
        else:
            for au, g in gains.items():
                new[self.au_index(au)] = float(g)
        if not bool(torch.isfinite(new).all() and (new > 0).all()):
            raise StylerigError(f"AU mapper input gains must be finite and > 0, got {new.tolist()}")
        self.input_gain.copy_(new.to(self.input_gain.device))


def mapper_from_directions(directions, w_std: torch.Tensor | None = None, **config: Any) -> AUMapper:
    """An untrained mapper that edits exactly like ``directions`` (:class:`LinearDirections`).

    ``w_std`` [w_dim]: the spread of the generator's w (normalises the MLP input; default ones);
    ``config``: ``hidden``, ``depth``, ``bottleneck`` of :class:`MapperConfig`. The mean used for the
    input is set by the caller (``mapper.w_mean.copy_(G.w_avg)``) or by :func:`new_mapper`.
    """
    masks = directions.slot_masks  # [A, num_ws]
    slots = tuple(int(s) for s in (masks > 0).any(dim=0).nonzero().flatten())
    cfg = MapperConfig(aus=tuple(directions.aus), num_ws=directions.num_ws, w_dim=directions.w_dim, slots=slots, **config)
    mapper = AUMapper(cfg)
    with torch.no_grad():
        idx = torch.tensor(slots)
        mapper.linear.copy_((directions.scales[:, None, None] * masks[:, idx, None]) * directions.directions[:, None, :])
        if w_std is not None:
            mapper.w_std.copy_(w_std.detach().float().cpu().clamp_min(1e-6))
    return mapper


def new_mapper(G, directions, num_samples: int = 4096, seed: int = 0, **config: Any) -> AUMapper:
    """:func:`mapper_from_directions` with the input normalised by ``G``'s w statistics (mean ``G.w_avg``,
    per-dimension std over ``num_samples`` mapped z, seeded)."""
    from stylerig_au.edit.refine import w_spread

    directions.check(G)
    mapper = mapper_from_directions(directions, w_std=w_spread(G, num_samples, seed), **config)
    with torch.no_grad():
        mapper.w_mean.copy_(G.w_avg.detach().float().cpu())
    return mapper


# ----------------------------------------------------------------------------- files


def _stored(name: str, value: torch.Tensor) -> torch.Tensor:
    """MLP weight matrices are stored as float16 (a third of the file; loaded back as float32), the rest as float32."""
    value = value.detach().cpu().clone()
    if not value.is_floating_point():
        return value
    return value.half() if name.endswith(".weight") and value.ndim == 2 else value.float()


def save_mapper(mapper: AUMapper, path: str | os.PathLike, generator: str, meta: dict[str, Any] | None = None) -> Path:
    """Write the file format of the module docstring atomically; returns the path."""
    from stylerig_au.fileio import atomic_torch_save

    path = Path(path)
    blob = {"format": FORMAT, "format_version": FORMAT_VERSION, "generator": str(generator),
            "config": mapper.config.to_dict(),
            "state": {k: _stored(k, v) for k, v in mapper.state_dict().items()},
            "input_gain": list(mapper.input_gains().values()),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "meta": dict(meta or {})}
    atomic_torch_save(path, blob)
    return path


def load_mapper(path: str | os.PathLike, G=None, device: str | torch.device = "cpu") -> AUMapper:
    """Read a mapper file (eval mode, no grad) on ``device``; with ``G``, check it was trained for ``G``.

    The file's ``generator``, ``created`` and ``meta`` are set as attributes of the returned module.

    Raises:
        StylerigError: missing or damaged file, another format, or another generator / W+ shape.
    """
    from stylerig_au.fileio import load_record

    path = Path(path)
    blob = load_record(path, FORMAT, FORMAT_VERSION, "AU mapper file", "train one with `stylerig-au train-mapper`")
    try:
        mapper = AUMapper(MapperConfig.from_dict(blob["config"]))
        mapper.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
        if blob.get("input_gain") is not None:
            mapper.set_input_gain(torch.tensor([float(g) for g in blob["input_gain"]]))
    except (KeyError, TypeError, ValueError, RuntimeError, StylerigError) as err:
        raise StylerigError(f"{path}: damaged AU mapper file ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    mapper.generator, mapper.created, mapper.meta = str(blob.get("generator", "?")), blob.get("created"), dict(blob.get("meta") or {})
    if G is not None:
        check_mapper(mapper, G, str(path))
    return mapper.eval().requires_grad_(False).to(device)


def check_mapper(mapper: AUMapper, G, name: str = "the AU mapper") -> None:
    """Raise StylerigError unless ``mapper`` was made for generator ``G``'s W+ space."""
    c = mapper.config
    gen = getattr(mapper, "generator", getattr(G, "name", "?"))
    if gen != getattr(G, "name", "?") or c.num_ws != G.num_ws or c.w_dim != G.w_dim:
        raise StylerigError(f"{name}: trained for {gen!r} (W+ {c.num_ws}x{c.w_dim}), not {getattr(G, 'name', '?')!r} "
                            f"(W+ {G.num_ws}x{G.w_dim}); train a mapper for it with `stylerig-au train-mapper`")


def load_default_mapper(G, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> AUMapper:
    """The AU mapper for generator ``G``: ``path`` if given, else the one bundled for it.

    Raises:
        StylerigError: none is bundled for this generator, or the file belongs to another generator.
    """
    from stylerig_au import pretrained

    if path is not None:
        return load_mapper(path, G, device)
    name = f"au-mapper-{G.name}"
    if name not in pretrained.OWN_ASSETS:
        raise StylerigError(f"no AU mapper is bundled for generator {G.name!r}; train one with "
                            "`stylerig-au train-mapper --generator ...` and pass the file with --mapper")
    return load_mapper(pretrained.own_path(name), G, device)


# ----------------------------------------------------------------------------- editing


@torch.no_grad()
def apply_mapper(mapper: AUMapper, ws: torch.Tensor, edit, slots, current_aus=None) -> torch.Tensor:
    """Edit latents with the mapper: ws [N, num_ws, w_dim] or [num_ws, w_dim] -> a new tensor, same shape and dtype.

    Relative terms give ΔAU = value; absolute targets give ΔAU = target − current (``current_aus``, as
    for :meth:`LinearDirections.apply`). All terms go through the mapper together (it is not additive),
    so a layer restriction applies to the whole edit: the union of the terms' layers. Slots the
    mapper leaves alone are copied bit for bit.

    Args:
        edit: an :class:`~stylerig_au.edit.spec.Edit`; ``slots``: the generator's ``G.slots``.
    Raises:
        StylerigError: wrong shape, an AU the mapper does not cover, a target without ``current_aus``.
    """
    from stylerig_au.edit.directions import _current, add_on_slots, as_batch
    from stylerig_au.edit.spec import Edit, layer_mask

    if not isinstance(edit, Edit):
        raise StylerigError(f"expected an Edit (e.g. AU(12, 2)), got {type(edit).__name__}")
    c = mapper.config
    batch, single = as_batch(ws, c.num_ws, c.w_dim)
    n = batch.shape[0]
    delta = torch.zeros(n, len(c.aus))
    weights = torch.zeros(c.num_ws)
    for au, term in edit.items():
        i = mapper.au_index(au)
        delta[:, i] += (term.value - _current(current_aus, au, n)) if term.absolute else term.value
        weights = torch.maximum(weights, layer_mask(term.layers, slots).float())
    device = next(mapper.parameters()).device
    step = mapper(batch.to(device), delta.to(device)).to(ws.device) * weights.to(ws.device)[None, :, None]
    return add_on_slots(batch, step, (step != 0).any(dim=(0, 2)), single)
