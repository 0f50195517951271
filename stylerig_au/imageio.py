"""Image files in and out: one loader that always gives uint8 RGB, atomic saving, grids.

Conventions: an *image array* is numpy uint8 [H, W, 3] RGB. Generator output is a float tensor
[3, H, W] or [1, 3, H, W] in [-1, 1]; :func:`to_uint8` converts both, :func:`batch_to_uint8` a batch.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from stylerig_au.errors import StylerigError, StylerigWarning
from stylerig_au.fileio import atomic_path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

# Photos up to MAX_PIXELS are read (a 200-megapixel phone photo is 16320x12240); larger ones are refused
# before their pixels are decoded. Above LARGE_PIXELS (Pillow's own warning level, 89.5 megapixels) a
# plain warning says the photo needs a lot of memory. $STYLERIG_AU_MAX_MEGAPIXELS changes the limit.
MAX_PIXELS = 200_000_000
LARGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
ENV_MAX_MEGAPIXELS = "STYLERIG_AU_MAX_MEGAPIXELS"
BYTES_PER_PIXEL_AT_PEAK = 15  # peak RSS per photo pixel of `align --upsample 4` on 12000x9000: 1645 MB (experiments/bench_align_memory.py)


def max_pixels() -> int:
    """The pixel limit of :func:`load_image`: ``$STYLERIG_AU_MAX_MEGAPIXELS`` x 1e6, or :data:`MAX_PIXELS`."""
    raw = os.environ.get(ENV_MAX_MEGAPIXELS, "").strip()
    if not raw:
        return MAX_PIXELS
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise StylerigError(f"${ENV_MAX_MEGAPIXELS}={raw!r} is not a positive number of megapixels (default {MAX_PIXELS / 1e6:g})")
    return int(value * 1e6)


def check_pixel_count(name: str, size: tuple[int, int]) -> None:
    """Refuse a (width, height) above :func:`max_pixels` with one line; warn (StylerigWarning) above LARGE_PIXELS."""
    w, h = size
    limit = max_pixels()
    if w * h > limit:
        raise StylerigError(f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the limit of {limit / 1e6:g}; "
                            f"shrink the photo (or raise ${ENV_MAX_MEGAPIXELS} if you have the memory)")
    if w * h > LARGE_PIXELS:
        gb = w * h * BYTES_PER_PIXEL_AT_PEAK / 1e9
        warnings.warn(f"{name} is a large photo ({w}x{h}, {w * h / 1e6:.0f} megapixels): it needs about {gb:.0f} GB "
                      "of memory; shrink it if that is too much", StylerigWarning, stacklevel=3)


@contextlib.contextmanager
def no_pillow_pixel_check() -> Iterator[None]:
    """Switch off Pillow's decompression-bomb check and warning (their text is no message for users) for
    the ``with`` block: :func:`open_image` applies our limit to the header's size instead, and our own
    outputs and headers-only reads need none."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(width, height) of a photo as displayed (EXIF rotation applied), read from its header only.

    Raises StylerigError when the file is missing, not an image, or over the pixel limit."""
    with open_image(path) as img:
        w, h = img.size
        if img.format == "PNG":  # Pillow's PNG getexif() decodes the pixels to look for a late eXIf chunk
            exif = Image.Exif()
            if img.info.get("exif"):
                exif.load(img.info["exif"])
        else:
            exif = img.getexif()
        orientation = exif.get(0x0112, 1)
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``Image.open`` with our checks: a missing file, an unreadable one and one over the pixel limit
    (checked on the header, before any pixel is decoded) raise one-line StylerigErrors naming the file;
    so do decoding errors inside the ``with`` block."""
    path = Path(path)
    if not path.is_file():
        raise StylerigError(f"{path}: no such file")
    try:
        with no_pillow_pixel_check(), Image.open(path) as img:
            check_pixel_count(str(path), img.size)
            yield img
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise StylerigError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read any Pillow-readable photo as uint8 RGB [H, W, 3].

    EXIF orientation is applied; transparency is composited over white; grayscale becomes RGB;
    16-bit and float images are rescaled to 0..255 (16-bit by /257, float by their own [min, max]
    when outside [0, 1]). Raises StylerigError naming the file when it is missing, not an image or
    over the pixel limit (:func:`max_pixels`); warns (:class:`~stylerig_au.errors.StylerigWarning`)
    for a photo over :data:`LARGE_PIXELS`.
    """
    with open_image(path) as img:
        if img.getexif().get(0x0112, 1) != 1:  # exif_transpose copies even an upright photo: only when needed
            img = ImageOps.exif_transpose(img)
        img.load()
        return pil_to_rgb(img)


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
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


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


# The largest side each format can store (Pillow's encoders fail above it); formats not named have no
# limit that a photo within the pixel limit could reach.
FORMAT_MAX_SIDE = {"WEBP": 16383, "JPEG": 65535, "GIF": 65535, "ICO": 256}


def check_image_output(path: str | os.PathLike, size: tuple[int, int]) -> str:
    """Check, before the work, that an image of ``size`` (width, height) can be saved as ``path``.

    Returns the Pillow format name of the suffix. Raises StylerigError for an unknown suffix or a side
    over the format's limit (e.g. WebP's 16383 px)."""
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise StylerigError(f"{path}: unknown image suffix {path.suffix or '(none)'!r}; use .png or .jpg")
    limit = FORMAT_MAX_SIDE.get(fmt)
    w, h = size
    pixel_limit = max_pixels()
    if w * h > pixel_limit:
        raise StylerigError(f"{path}: the result would be {w}x{h}, {w * h / 1e6:.0f} megapixels, over the limit of "
                            f"{pixel_limit / 1e6:g}; make it smaller")
    if limit is not None and max(w, h) > limit:
        raise StylerigError(f"{path}: a {fmt} image can be at most {limit} px a side but this one would be {w}x{h}; "
                            "write a .png (or shrink the photo)")
    return fmt


def save_image(path: str | os.PathLike, image: np.ndarray | torch.Tensor, value_range: tuple[float, float] = (-1.0, 1.0),
               provenance: dict | None = None) -> Path:
    """Write an image (see :func:`to_uint8` for accepted inputs) atomically; format from the suffix.

    ``provenance``: what made it (a JSON-able dict), stored in a PNG text chunk so that a later run can
    tell its own file from someone else's (:mod:`stylerig_au.outputs`); ignored for other formats.
    The file is decoded back before it replaces ``path``. An unknown suffix or a size the format cannot
    store is refused before anything is written (:func:`check_image_output`).
    """
    path = Path(path)
    arr = to_uint8(image, value_range)
    fmt = check_image_output(path, (arr.shape[1], arr.shape[0]))
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
    with no_pillow_pixel_check(), Image.open(path) as img:  # our own output: no Pillow bomb check, no warning
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


# ----------------------------------------------------------------------------- what a pasted-back photo keeps


@dataclass
class PhotoExtras:
    """What :func:`load_image` leaves out of a photo that an edited, pasted-back copy can keep.

    Attributes:
        icc_profile: the embedded colour profile (bytes) or None.
        alpha: the transparency [H, W] (uint8, or uint16 for a 16-bit photo) as displayed, or None.
        deep: the 16-bit colours uint16 [H, W, 3] as displayed, or None (8-bit photos; 16-bit colour
            photos are read with OpenCV, which Pillow cannot do).
        lost: what could not even be read (e.g. "16-bit depth (needs OpenCV)").
    """

    icc_profile: bytes | None = None
    alpha: np.ndarray | None = None
    deep: np.ndarray | None = None
    lost: list[str] = field(default_factory=list)

    def unkept(self, suffix: str) -> list[str]:
        """What an output with ``suffix`` drops of these (plus what could not be read)."""
        fmt = Image.registered_extensions().get(suffix.lower())
        lost = list(self.lost)
        if self.icc_profile is not None and fmt not in ICC_FORMATS:
            lost.append("colour profile")
        if self.alpha is not None and fmt not in ALPHA_FORMATS:
            lost.append("transparency")
        if self.deep is not None and fmt != "PNG":
            lost.append("16-bit depth")
        return lost


ICC_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")
ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")
# Pillow's exif_transpose as numpy steps, for arrays read without Pillow (EXIF orientation 1-8).
_ORIENT = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.swapaxes(0, 1),
           6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1), 8: lambda a: np.rot90(a, 1)}


def load_extras(path: str | os.PathLike) -> PhotoExtras:
    """The colour profile, transparency and 16-bit colours of a photo (see :class:`PhotoExtras`), oriented
    like :func:`load_image`'s result. Raises StylerigError as :func:`open_image` does."""
    with open_image(path) as img:
        extras = PhotoExtras(icc_profile=img.info.get("icc_profile") or None)
        deep_colour = _png_or_tiff_is_16_bit(img)  # before the pixels load (loading clears img.tile)
        orientation = img.getexif().get(0x0112, 1)
        shown = ImageOps.exif_transpose(img) if orientation != 1 else img  # an upright photo needs no rotated copy
        if shown.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (shown.mode == "P" and "transparency" in shown.info):
            extras.alpha = np.asarray(shown.convert("RGBA"))[..., 3].copy()
        if shown.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            extras.deep = np.repeat(np.asarray(shown, dtype=np.uint16)[..., None], 3, axis=2)
        elif deep_colour:
            deep = _read_16_bit(path)
            if deep is None:
                extras.lost.append("16-bit depth (reading it needs OpenCV: pip install opencv-python-headless)")
            else:
                deep = np.ascontiguousarray(_ORIENT.get(orientation, lambda a: a)(deep))
                extras.deep = deep[..., :3]
                if deep.shape[2] == 4:
                    extras.alpha = deep[..., 3].copy()
    return extras


def _png_or_tiff_is_16_bit(img: Image.Image) -> bool:
    """True for a colour PNG or TIFF with 16 bits a channel (which Pillow reads as 8-bit RGB)."""
    if img.format == "PNG":
        return img.mode in ("RGB", "RGBA") and any("16" in str(t.args) for t in getattr(img, "tile", []) or [])
    if img.format == "TIFF":
        bits = img.tag_v2.get(258, ()) if hasattr(img, "tag_v2") else ()
        return img.mode in ("RGB", "RGBA") and bool(bits) and max(bits) == 16
    return False


def _read_16_bit(path: str | os.PathLike) -> np.ndarray | None:
    """uint16 RGB(A) [H, W, 3 or 4] of a 16-bit photo with OpenCV, as stored (no EXIF rotation); None without OpenCV."""
    try:
        import cv2
    except ImportError:
        return None
    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
        return None
    return arr[..., [2, 1, 0, 3][: arr.shape[2]]]


def save_photo(path: str | os.PathLike, rgb: np.ndarray, extras: PhotoExtras | None = None) -> list[str]:
    """Write an edited photo, keeping what the format can hold of the original's ``extras``.

    Args:
        rgb: uint8 or uint16 [H, W, 3] (uint16 only with ``extras.deep``, for a 16-bit photo).
        extras: from :func:`load_extras` of the original, or None.
    Returns:
        What was not kept (e.g. ["transparency"] for a .jpg of a transparent PNG), for a one-line note.
    """
    path = Path(path)
    extras = extras or PhotoExtras()
    lost = extras.unkept(path.suffix)
    fmt = check_image_output(path, (rgb.shape[1], rgb.shape[0]))
    alpha = extras.alpha if fmt in ALPHA_FORMATS else None
    icc = extras.icc_profile if fmt in ICC_FORMATS else None
    size = (rgb.shape[1], rgb.shape[0])
    if rgb.dtype == np.uint16 and fmt == "PNG":
        if alpha is not None and alpha.dtype != np.uint16:
            alpha = alpha.astype(np.uint16) * 257
        with atomic_path(path, verify=lambda tmp: check_image_file(tmp, size)) as tmp:
            tmp.write_bytes(encode_png16(rgb, alpha, icc))
        return lost
    rgb8 = rgb if rgb.dtype == np.uint8 else np.round(rgb.astype(np.float64) / 257).astype(np.uint8)
    image = Image.fromarray(rgb8)
    if alpha is not None:
        a8 = alpha if alpha.dtype == np.uint8 else np.round(alpha.astype(np.float64) / 257).astype(np.uint8)
        image.putalpha(Image.fromarray(a8))
    options = {"quality": 95} if fmt == "JPEG" else {}
    if icc is not None:
        options["icc_profile"] = icc
    with atomic_path(path, verify=lambda tmp: check_image_file(tmp, size)) as tmp:
        try:
            image.save(tmp, format=fmt, **options)
        except ValueError as err:  # an encoder's refusal (OSErrors: atomic_path reports them)
            raise StylerigError(f"{path}: the {fmt} encoder failed ({err}); nothing was written; try a .png") from None
    return lost


def encode_png16(rgb: np.ndarray, alpha: np.ndarray | None = None, icc_profile: bytes | None = None) -> bytes:
    """A 16-bit PNG file (bytes) of uint16 [H, W, 3] colours, optional uint16 [H, W] alpha and ICC profile
    (Pillow cannot write 16-bit colour PNGs)."""
    import struct
    import zlib

    h, w = rgb.shape[:2]
    planes = rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=2)
    rows = planes.astype(">u2").reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    colour_type = 2 if alpha is None else 6
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
    if icc_profile:
        out += chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(icc_profile))
    return out + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
