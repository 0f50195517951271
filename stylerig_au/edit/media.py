"""Outputs of the edit commands: animations (GIF with Pillow, MP4 with OpenCV) and labelled grids.

Every writer goes through :func:`stylerig_au.fileio.atomic_path` and reads its file back before the rename
(OpenCV's writer ignores write errors): an error never leaves a half-written file or replaces a good one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stylerig_au.errors import StylerigError

ANIMATION_SUFFIXES = (".gif", ".mp4")
# Largest frame side per format: GIF stores 16-bit sizes; OpenCV's MPEG-4 encoder refuses 8192 and more
# (and frames are padded to even sides).
ANIMATION_MAX_SIDE = {".gif": 65535, ".mp4": 8190}
# Frame rates the writers store faithfully: a GIF frame lasts a whole number of milliseconds, at most 65535.
MIN_FPS, MAX_FPS = 0.1, 100.0
ANIMATION_MAX_BYTES = 4_000_000_000  # the frames are held in memory until they are written


def check_animation_suffix(path: str | os.PathLike) -> None:
    """Raise StylerigError unless ``path`` ends in .gif, or in .mp4 with a video writer importable (OpenCV)."""
    suffix = Path(path).suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise StylerigError(f"{path}: unsupported animation suffix {suffix or '(none)'!r}; use .gif (or .mp4)")
    if suffix == ".mp4":
        _cv2()


def check_animation_output(path: str | os.PathLike, size: tuple[int, int], fps: float, frames: int = 1) -> None:
    """Check, before the work, that ``frames`` frames of ``size`` (width, height) at ``fps`` can be written
    as ``path``.

    Raises StylerigError for an unsupported suffix, a side over the format's limit, an fps outside
    [MIN_FPS, MAX_FPS], or frames that together would need more than ANIMATION_MAX_BYTES of memory."""
    check_animation_suffix(path)
    if not MIN_FPS <= fps <= MAX_FPS:
        raise StylerigError(f"fps must be between {MIN_FPS:g} and {MAX_FPS:g}, got {fps:g}")
    suffix = Path(path).suffix.lower()
    limit = ANIMATION_MAX_SIDE[suffix]
    w, h = size
    if max(w, h) > limit:
        raise StylerigError(f"{path}: {suffix} frames can be at most {limit} px a side but these would be {w}x{h}; "
                            "lower --size")
    if frames * w * h * 3 > ANIMATION_MAX_BYTES:
        raise StylerigError(f"{path}: {frames} frames of {w}x{h} would need {frames * w * h * 3 / 1e9:.0f} GB of memory "
                            f"(at most {ANIMATION_MAX_BYTES / 1e9:g}); lower --size or --frames")


def fitted_size(size: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The (width, height) :func:`fit_size` gives an image of ``size``."""
    w, h = size
    if not max_side or max(w, h) <= max_side:
        return w, h
    scale = max_side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _cv2():
    try:
        import cv2
    except ImportError:
        raise StylerigError("writing .mp4 needs OpenCV: pip install opencv-python-headless (or write a .gif)") from None
    return cv2


def boomerang(frames: Sequence) -> list:
    """``frames`` forwards then backwards without repeating either end: n frames -> 2n - 2 (n >= 2)."""
    frames = list(frames)
    return frames + frames[-2:0:-1] if len(frames) > 2 else frames


def fit_size(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """uint8 [H, W, 3] shrunk (Lanczos, aspect kept) so its longer side is at most ``max_side`` (None/0: as is)."""
    h, w = image.shape[:2]
    size = fitted_size((w, h), max_side)
    if size == (w, h):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def write_animation(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: float) -> Path:
    """Write uint8 [H, W, 3] frames (all one size) as a looping GIF or an MP4 (MPEG-4, OpenCV), atomically.

    GIF frame durations are whole milliseconds (viewers round them to 10 ms). Raises StylerigError for an
    unsupported suffix, no frames, frames of different sizes or too large for the format, an ``fps``
    outside [MIN_FPS, MAX_FPS], or a missing MP4 writer.
    """
    from stylerig_au.fileio import atomic_path

    path = Path(path)
    if not frames:
        raise StylerigError("an animation needs at least one frame")
    shape = frames[0].shape
    check_animation_output(path, (shape[1], shape[0]), fps)
    if any(f.shape != shape or f.dtype != np.uint8 for f in frames):
        raise StylerigError("animation frames must all be uint8 images of one size")
    if path.suffix.lower() == ".gif":
        from stylerig_au.imageio import check_image_file

        images = [Image.fromarray(f) for f in frames]
        duration = round(1000 / fps)
        with atomic_path(path, verify=lambda tmp: check_image_file(tmp, images[0].size, duration * len(images))) as tmp:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
        return path
    cv2 = _cv2()
    h, w = shape[:2]
    even_h, even_w = h + h % 2, w + w % 2  # MPEG-4 wants even sides
    with atomic_path(path, verify=lambda tmp: check_video_file(tmp, (even_w, even_h), len(frames))) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (even_w, even_h))
        if not writer.isOpened():
            raise StylerigError(f"{path}: OpenCV could not open an MP4 writer here; write a .gif instead")
        try:
            for f in frames:
                if (h, w) != (even_h, even_w):
                    f = np.pad(f, ((0, even_h - h), (0, even_w - w), (0, 0)), mode="edge")
                writer.write(np.ascontiguousarray(f[..., ::-1]))
        finally:
            writer.release()
    return path


def check_video_file(path: str | os.PathLike, size: tuple[int, int], frames: int) -> None:
    """Raise ValueError unless OpenCV opens the video at ``path`` and reads back ``frames`` frames of
    ``size`` (width, height). OpenCV's writer ignores write errors (a full disk), so this is the check."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError("OpenCV cannot open it")
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if (frame.shape[1], frame.shape[0]) != tuple(size):
                raise ValueError(f"frame {count} is {frame.shape[1]}x{frame.shape[0]}, expected {size[0]}x{size[1]}")
            count += 1
    finally:
        capture.release()
    if count != frames:
        raise ValueError(f"read back {count} of {frames} frames")


MIN_FONT_PX = 14  # the smallest label text that stays legible at 100 % zoom


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def font_px(cell: int) -> int:
    """Label text size in pixels for grids of ``cell``-pixel faces (at least :data:`MIN_FONT_PX`)."""
    return max(MIN_FONT_PX, cell // 12)


def au_label(au: int, cell: int = 256) -> str:
    """Row label of an AU: 'AU12' and, for cells of 128 px or more, its FACS name on two lines below."""
    from stylerig_au.au.vocab import AU as AU_TABLE

    return f"AU{au}" + ("\n" + AU_TABLE[au].name.replace(" ", "\n", 1) if cell >= 128 else "")


def value_label(value: float) -> str:
    """Column label of an AU change: '+2', '-0.5', and '0' for no change."""
    return f"{value:+g}" if value else "0"


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], row_labels: Sequence[str] | None = None,
                  col_labels: Sequence[str] | None = None, cell: int = 256, pad: int = 4,
                  header_lines: int | None = None) -> np.ndarray:
    """Tile rows of images into one uint8 [H, W, 3] grid on white, with optional row and column labels.

    Each image is fitted (aspect kept) into a ``cell`` x ``cell`` square. Without labels the grid is
    ``rows * (cell + pad) + pad`` high and ``cols * (cell + pad) + pad`` wide; row labels add a
    :func:`label_width` column on the left, column labels a :func:`header_height` band on top, tall
    enough for ``header_lines`` lines (default: the most lines any column label has). Labels may hold
    several lines (``'\\n'``). Text is :func:`font_px` high.
    """
    from stylerig_au.imageio import make_grid

    if not rows or not rows[0]:
        raise StylerigError("a grid needs at least one image")
    ncols = len(rows[0])
    if any(len(r) != ncols for r in rows):
        raise StylerigError("every grid row needs the same number of images")
    if row_labels is not None and len(row_labels) != len(rows):
        raise StylerigError(f"{len(rows)} rows but {len(row_labels)} row labels")
    if col_labels is not None and len(col_labels) != ncols:
        raise StylerigError(f"{ncols} columns but {len(col_labels)} column labels")
    body = make_grid([img for r in rows for img in r], ncols=ncols, cell=cell, pad=pad)
    left = label_width(cell) if row_labels is not None else 0
    if header_lines is None:
        header_lines = max((t.count("\n") + 1 for t in col_labels or []), default=1)
    top = header_height(cell, header_lines) if col_labels is not None else 0
    if not left and not top:
        return body
    canvas = Image.new("RGB", (body.shape[1] + left, body.shape[0] + top), (255, 255, 255))
    canvas.paste(Image.fromarray(body), (left, top))
    draw = ImageDraw.Draw(canvas)
    font = _font(font_px(cell))
    for c, text in enumerate(col_labels or []):
        x = left + pad + c * (cell + pad) + cell // 2
        _text(draw, (x, top // 2 + pad // 2), text, font, "mm")
    for r, text in enumerate(row_labels or []):
        y = top + pad + r * (cell + pad) + cell // 2
        _text(draw, (left - pad, y), text, font, "rm")
    return np.asarray(canvas)


def captioned_grid(images: Sequence[np.ndarray], captions: Sequence[str], ncols: int | None = None,
                   cell: int = 256, pad: int = 4) -> np.ndarray:
    """Tile images ``ncols`` to a row, each under its own caption: uint8 [H, W, 3] on white.

    Rows are :func:`labelled_grid` rows whose column labels are the captions (all with the same
    header height, so captions line up); a short last row is filled with blank tiles.
    """
    if len(captions) != len(images):
        raise StylerigError(f"{len(images)} images but {len(captions)} captions")
    if not images:
        raise StylerigError("a grid needs at least one image")
    ncols = ncols or len(images)
    blank = np.full((cell, cell, 3), 255, np.uint8)
    fill = -len(images) % ncols
    images, captions = list(images) + [blank] * fill, list(captions) + [""] * fill
    lines = max(t.count("\n") + 1 for t in captions)
    bands = [labelled_grid([images[i:i + ncols]], col_labels=captions[i:i + ncols], cell=cell, pad=pad, header_lines=lines)
             for i in range(0, len(images), ncols)]
    return np.concatenate(bands, axis=0)


def _text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font, anchor: str) -> None:
    """Draw black text anchored at ``xy`` ('mm': its centre, 'rm': its right middle), with any font."""
    x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=font, align="right")
    w, h = x1 - x0, y1 - y0
    x = xy[0] - (w // 2 if anchor == "mm" else w) - x0
    draw.multiline_text((x, xy[1] - h // 2 - y0), text, fill=(0, 0, 0), font=font, align="right" if anchor == "rm" else "center")


def grid_size(nrows: int, ncols: int, cell: int = 256, pad: int = 4, labels: bool = False) -> tuple[int, int]:
    """(width, height) of a :func:`labelled_grid` of ``nrows`` x ``ncols`` cells (with row and column labels
    when ``labels``), known before any face is rendered."""
    w, h = ncols * (cell + pad) + pad, nrows * (cell + pad) + pad
    return (w + label_width(cell), h + header_height(cell)) if labels else (w, h)


def label_width(cell: int) -> int:
    """Width in pixels of the row-label column of a :func:`labelled_grid` with this cell size."""
    return max(6 * font_px(cell), cell * 3 // 4)


def header_height(cell: int, lines: int = 1) -> int:
    """Height in pixels of the column-label band of a :func:`labelled_grid` with this cell size and
    ``lines`` lines of label text."""
    return max(cell // 6, lines * round(font_px(cell) * 1.3) + 8)
