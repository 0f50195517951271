"""Image files in and out: one loader that always gives uint8 RGB, atomic saving, grids.

Conventions: an *image array* is numpy uint8 [H, W, 3] RGB. Generator output is a float tensor
[3, H, W] or [1, 3, H, W] in [-1, 1]; :func:`to_uint8` converts both, :func:`batch_to_uint8` a batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from stylerig_au.errors import StylerigError
from stylerig_au.fileio import atomic_path  # noqa: F401 - re-exported: imageio.atomic_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read any Pillow-readable photo as uint8 RGB [H, W, 3].

    EXIF orientation is applied; transparency is composited over white; grayscale becomes RGB;
    16-bit and float images are rescaled to 0..255 (16-bit by /257, float by their own [min, max]
    when outside [0, 1]). Raises StylerigError naming the file when it is missing or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise StylerigError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
            return pil_to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise StylerigError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A Pillow image of any mode -> uint8 RGB [H, W, 3]."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.uint16).astype(np.float64) / 257.0
        return np.repeat(np.round(arr).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if img.mode == "I" and arr.max(initial=0) > 255:
            arr = arr / 257.0
        elif img.mode == "F" and arr.max(initial=0) <= 1.0 and arr.min(initial=0) >= 0.0:
            arr = arr * 255.0
        elif img.mode == "F":
            lo, hi = arr.min(), arr.max()
            arr = (arr - lo) / max(hi - lo, 1e-12) * 255.0
        return np.repeat(np.clip(np.round(arr), 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def to_uint8(image: np.ndarray | torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """uint8 [H, W, 3] from a uint8 array (returned as is), or a float array/tensor.

    Float inputs are [H, W, 3] arrays or [3, H, W] / [1, 3, H, W] tensors with values in
    ``value_range`` (the generator's [-1, 1] by default); a nan or inf among them is a StylerigError.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if t.ndim == 4:
            if t.shape[0] != 1:
                raise StylerigError(f"expected one image, got a batch of {t.shape[0]}")
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            raise StylerigError(f"expected an image tensor [3, H, W], got {tuple(image.shape)}")
        arr = t.permute(1, 2, 0).numpy()
    else:
        arr = np.asarray(image)
        if arr.dtype == np.uint8:
            if arr.ndim == 2:
                arr = np.repeat(arr[..., None], 3, axis=2)
            return arr
    if not np.isfinite(arr).all():  # a diverged render: writing it would report noise as success
        raise StylerigError("the image has non-finite pixel values (nan/inf): the render diverged; nothing was written")
    lo, hi = value_range
    arr = (arr.astype(np.float64) - lo) / (hi - lo) * 255.0
    arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


def batch_to_uint8(images: torch.Tensor) -> np.ndarray:
    """uint8 numpy [N, H, W, 3] from a float tensor batch [N, 3, H, W] in [-1, 1] (clipped, rounded)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise StylerigError(f"expected an image batch tensor [N, 3, H, W], got {tuple(getattr(images, 'shape', ()))}")
    if not bool(torch.isfinite(images).all()):
        raise StylerigError("the images have non-finite pixel values (nan/inf): the render diverged")
    u8 = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).cpu().numpy()


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [1, 3, H, W] in [-1, 1]."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise StylerigError(f"expected a uint8 image [H, W, 3], got {arr.dtype} {arr.shape}")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0


def save_image(path: str | os.PathLike, image: np.ndarray | torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0),
               provenance: dict | None = None) -> Path:
    """Write an image (see :func:`to_uint8` for accepted inputs) atomically; format from the suffix.

    ``provenance``: what made it (a JSON-able dict), stored in a PNG text chunk so that a later run can
    tell its own file from someone else's (:mod:`stylerig_au.outputs`); ignored for other formats.
    The file is decoded back before it replaces ``path``.
    """
    path = Path(path)
    arr = to_uint8(image, value_range)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise StylerigError(f"{path}: unknown image suffix {path.suffix!r}; use .png or .jpg")
    options: dict = {"quality": 95} if fmt == "JPEG" else {}
    if provenance is not None and fmt == "PNG":
        import json

        from PIL.PngImagePlugin import PngInfo

        from stylerig_au.outputs import PROVENANCE_KEY

        options["pnginfo"] = PngInfo()
        options["pnginfo"].add_text(PROVENANCE_KEY, json.dumps(provenance, sort_keys=True))
    size = (arr.shape[1], arr.shape[0])
    with atomic_path(path, verify=lambda tmp: check_image_file(tmp, size)) as tmp:
        Image.fromarray(arr).save(tmp, format=fmt, **options)
    return path


def check_image_file(path: str | os.PathLike, size: tuple[int, int], duration_ms: int | None = None) -> None:
    """Raise ValueError unless ``path`` decodes completely (every frame) as an image of ``size`` (width, height).

    ``duration_ms``: for an animation, the total play time its frames must add up to (Pillow merges
    identical neighbouring frames into one longer frame, so the time, not the count, is checked).
    Pillow's own errors for a truncated file pass through.
    """
    total = 0
    with Image.open(path) as img:
        for k in range(getattr(img, "n_frames", 1)):
            img.seek(k)
            img.load()
            total += int(img.info.get("duration", 0))
        if img.size != tuple(size):
            raise ValueError(f"read back {img.size[0]}x{img.size[1]}, expected {size[0]}x{size[1]}")
    # GIF stores centiseconds: each frame may be rounded by up to 5 ms
    if duration_ms is not None and abs(total - duration_ms) > 5 * max(1, getattr(img, "n_frames", 1)):
        raise ValueError(f"its frames last {total} ms, expected {duration_ms} ms")


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 [H, W, 3] to (width, height) with Lanczos filtering."""
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def make_grid(images: Sequence[np.ndarray | torch.Tensor], ncols: int | None = None, cell: int = 256, pad: int = 4) -> np.ndarray:
    """Tile images into one uint8 [H, W, 3] grid, row by row.

    Each image is fitted (aspect kept) into a ``cell`` x ``cell`` square on a white background;
    ``ncols`` defaults to all images in one row.
    """
    if not images:
        raise StylerigError("make_grid needs at least one image")
    ncols = ncols or len(images)
    nrows = (len(images) + ncols - 1) // ncols
    grid = np.full((nrows * (cell + pad) + pad, ncols * (cell + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        arr = to_uint8(image)
        h, w = arr.shape[:2]
        scale = cell / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        arr = resize(arr, (nw, nh))
        r, c = divmod(i, ncols)
        y0 = pad + r * (cell + pad) + (cell - nh) // 2
        x0 = pad + c * (cell + pad) + (cell - nw) // 2
        grid[y0 : y0 + nh, x0 : x0 + nw] = arr
    return grid


def list_images(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (their image files, sorted, not recursive) into a list of paths.

    A file named twice (also as ``./x`` or through a folder, a symlink) is listed once, where it first appears.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
