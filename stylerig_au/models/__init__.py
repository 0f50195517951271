"""Generators behind one protocol, and :func:`load_generator`, which picks the loader for a name or path."""

from __future__ import annotations

from pathlib import Path

from stylerig_au.errors import StylerigError
from stylerig_au.models.protocol import Generator, StyleSlot, group_for_resolution

DEFAULT_GENERATOR = "mobilestylegan-ffhq-1024"
BUILTIN_GENERATORS = ("mobilestylegan-ffhq-1024",)

__all__ = ["seed_to_z", "seed_ws", "BUILTIN_GENERATORS", "DEFAULT_GENERATOR", "Generator", "StyleSlot", "group_for_resolution",
           "load_generator"]


def seed_to_z(seed: int, z_dim: int):
    """The latent z float32 [1, z_dim] for ``seed`` (numpy RandomState normal, as NVIDIA's generate.py)."""
    import numpy as np
    import torch

    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def seed_ws(G: Generator, seed_start: int, n: int, psi: float, device: str = "cpu"):
    """W+ latents float32 [n, num_ws, w_dim] of seeds ``seed_start`` .. ``seed_start + n - 1``: w =
    ``G.mapping(z, psi)`` (one batch, no gradient) on every slot, on ``device``."""
    import torch

    with torch.no_grad():
        z = torch.cat([seed_to_z(seed_start + i, G.z_dim) for i in range(n)]).to(device)
        return G.mapping(z, psi=psi)[:, None].repeat(1, G.num_ws, 1)


def load_generator(spec: str | Path = DEFAULT_GENERATOR, device: str = "cpu", impl: str = "auto") -> Generator:
    """Load a generator by name or checkpoint path, in eval mode on ``device``.

    ``spec``:
      - ``'mobilestylegan-ffhq-1024'`` (default): the embedded MobileStyleGAN (fetched on first use);
      - ``*.pkl``: an NVIDIA stylegan2-ada-pytorch snapshot (read without running its embedded code);
      - ``*.pt`` / ``*.pth``: a rosinality StyleGAN2 checkpoint, a stylerig_au StyleGAN2 file, or a
        converted MobileStyleGAN file.

    ``impl`` ('auto' | 'cuda' | 'ref') picks the fused-op implementation (upfirdn2d, bias_act).

    Raises:
        StylerigError: unknown name, missing file, or a checkpoint that does not match.
    """
    import torch

    if isinstance(device, str) and device.startswith("cuda") and not torch.cuda.is_available():
        raise StylerigError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    name = str(spec)
    if name in BUILTIN_GENERATORS:
        from stylerig_au.models.mobilestylegan import load_mobilestylegan

        return load_mobilestylegan(None, device=device, impl=impl)
    path = Path(spec).expanduser()
    if not path.exists():
        hint = f"a .pkl / .pt checkpoint path or one of: {', '.join(BUILTIN_GENERATORS)}"
        kind = "checkpoint not found" if path.suffix else "unknown generator"
        raise StylerigError(f"{kind}: {name!r}; expected {hint}")
    if path.is_dir():
        raise StylerigError(f"{name} is a directory; expected a .pkl or .pt checkpoint file")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        from stylerig_au.models.checkpoints import load_nvidia_pickle

        return load_nvidia_pickle(path, device=device, impl=impl)
    if suffix in (".pt", ".pth"):
        if _is_mobilestylegan_file(path):
            from stylerig_au.models.mobilestylegan import load_mobilestylegan

            return load_mobilestylegan(path, device=device, impl=impl)
        from stylerig_au.models.checkpoints import load_pt

        return load_pt(path, device=device, impl=impl)
    raise StylerigError(f"unsupported checkpoint type {suffix or '(no suffix)'!r} for {name}; "
                        "expected .pkl (NVIDIA) or .pt (rosinality / stylerig_au)")


def _is_mobilestylegan_file(path: Path) -> bool:
    """True for a converted MobileStyleGAN ``.pt``: its ``format`` entry (weights-only, memory-mapped peek)
    names MobileStyleGAN, or, for a file that cannot be peeked, its file name does."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # legacy (non-zip) files cannot be memory-mapped; load_pt reports real problems
        return "mobilestylegan" in path.name.lower()
    return isinstance(ckpt, dict) and "mobilestylegan" in str(ckpt.get("format", "")).lower()
