"""The one ``--device`` parser and resolver every command uses.

Accepted spellings: ``cpu``, ``cuda``, ``cuda:N`` and (where a command offers it) ``auto``.
``cuda`` means the current GPU, except under ``torchrun`` (``WORLD_SIZE`` > 1) where each process
takes GPU ``LOCAL_RANK``. Whatever is chosen becomes torch's current GPU, always by index
(``torch.cuda.set_device(torch.device("cuda"))`` raises, so a bare ``cuda`` is never handed to it).
Anything else, a GPU index this machine does not have, or CUDA where there is none, raises
:class:`~stylerig_au.errors.StylerigError` with a one-line message (the CLI prints ``error: ...``).
"""

from __future__ import annotations

import os
import re

from stylerig_au.errors import StylerigError

_SPEC = re.compile(r"^(cpu|cuda|auto)(?::(\d+))?$")
HELP = "Torch device: cpu, cuda or cuda:N (cuda: the current GPU; under torchrun: GPU LOCAL_RANK)."


def torchrun_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    which defaults to ``RANK``: one machine); (0, 1, 0) without it. The one reading of that environment:
    device choice, sharded inversion and distributed training all use it."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise StylerigError(f"bad torchrun environment (WORLD_SIZE / LOCAL_RANK / RANK): {err}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise StylerigError(f"bad torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return rank, world, local


def torchrun_local_rank() -> int | None:
    """``LOCAL_RANK`` (default ``RANK``, then 0) when launched by torchrun with ``WORLD_SIZE`` > 1, else None."""
    rank, world, local = torchrun_env()
    return local if world > 1 else None


def parse_device(spec: str, allow_auto: bool = False) -> tuple[str, int | None]:
    """Split a ``--device`` string into (kind, index): ``('cpu', None)``, ``('cuda', None)``, ``('cuda', 2)``,
    ``('auto', None)``. Checks spelling only (no CUDA query); StylerigError for anything else."""
    text = str(spec).strip().lower()
    m = _SPEC.match(text)
    kinds = "cpu, cuda or cuda:N" + (" (or auto)" if allow_auto else "")
    if m is None or (m.group(1) != "cuda" and m.group(2) is not None) or (m.group(1) == "auto" and not allow_auto):
        raise StylerigError(f"--device {spec!r} is not a device: use {kinds}")
    return m.group(1), None if m.group(2) is None else int(m.group(2))


def resolve_device(spec: str, allow_auto: bool = False) -> str:
    """The concrete device for ``spec``: ``'cpu'`` or ``'cuda:N'``, with GPU N made torch's current one.

    ``auto`` (when allowed) is ``cuda`` if CUDA is available, else ``cpu``. Raises StylerigError for a bad
    spelling, CUDA asked for without CUDA, or an index this machine does not have.
    """
    import torch

    kind, index = parse_device(spec, allow_auto)
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise StylerigError(f"--device {spec} requested but CUDA is not available here; use --device cpu")
    count = torch.cuda.device_count()
    if index is None:
        local = torchrun_local_rank()
        index = local if local is not None else torch.cuda.current_device()
    if not 0 <= index < count:
        raise StylerigError(f"--device {spec}: GPU {index} does not exist here ({count} GPU{'s' if count != 1 else ''}: "
                            f"use cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    torch.cuda.set_device(index)
    return f"cuda:{index}"
