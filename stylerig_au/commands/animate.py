"""``stylerig-au animate PHOTO_OR_LATENT --au 12=+2 --out FILE.gif``: the edit as an animation.

Frames interpolate linearly in W+ from the unedited face (first frame) to the full edit (last frame);
``--boomerang`` plays them back again. Photos are pasted back frame by frame.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from stylerig_au.commands._editing import AU_HELP, PRESET_HELP, common_options, source_argument, start
from stylerig_au.commands._numbers import FiniteFloat
from stylerig_au.commands._paths import OutputFile
from stylerig_au.errors import StylerigWarning


@click.command()
@source_argument
@click.option("--au", "aus", multiple=True, metavar="AU=[+-]N|AU=@N", help=AU_HELP)
@click.option("--preset", "preset_names", multiple=True, metavar="NAME[=STRENGTH]", help=PRESET_HELP)
@click.option("--out", required=True, type=OutputFile(),
              help="Output animation: .gif (Pillow) or .mp4 (needs OpenCV: pip install opencv-python-headless).")
@click.option("--frames", default=24, show_default=True, type=click.IntRange(2, 1000), help="Frames from unedited to edited.")
@click.option("--fps", default=12.0, show_default=True, type=FiniteFloat(0.1, 100), help="Frames per second (0.1-100).")
@click.option("--boomerang", is_flag=True, help="Play forwards then backwards (2*frames-2 frames), for a seamless loop.")
@click.option("--size", "max_side", default=512, show_default=True, type=click.IntRange(0),
              help="Shrink frames so the longer side is at most this (0: full size).")
@common_options
def animate(source: Path, aus: tuple[str, ...], preset_names: tuple[str, ...], out: Path, frames: int, fps: float,
            boomerang: bool, max_side: int, **options) -> None:
    """Animate an AU edit of PHOTO_OR_LATENT (a photo, or a .pt latent from `stylerig-au invert`).

    Frames go linearly in W+ from the unedited face to the full edit. Photos are inverted once (latent
    cached in --latent-dir) and every frame is pasted back into the photo; latent files give aligned faces.

    \b
    Examples:
      stylerig-au animate me.jpg --preset smile=2 --boomerang --out smile.gif
      stylerig-au animate me.pt --au 26=+2 --frames 12 --fps 8 --out jaw.gif
    """
    from tqdm import tqdm

    from stylerig_au.edit import media
    from stylerig_au.edit.photo import compose, render_ws
    from stylerig_au.edit.syntax import parse_edit_options

    change = parse_edit_options(aus, preset_names)
    media.check_animation_suffix(out)
    session = start(source, out, aus_in_use=list(change), measures=not change.is_relative,
                    check_output=lambda size: media.check_animation_output(out, media.fitted_size(size, max_side), fps,
                                                                           2 * frames - 2 if boomerang else frames),
                    **options)
    subject, editor = session.subject, session.editor
    path = editor.interpolate(subject.record, change, frames)
    images = []
    for ws in tqdm(path, desc="animate", unit="frame", leave=False):
        images.append(media.fit_size(compose(subject, render_ws(editor, subject, ws, change)), max_side))
    if boomerang:
        images = media.boomerang(images)
    media.write_animation(out, images, fps)
    lost = subject.extras.unkept(out.suffix) if subject.is_photo else []
    if lost:
        warnings.warn(f"{out} does not keep the photo's {' or '.join(lost)} (animations are 8-bit and opaque)",
                      StylerigWarning, stacklevel=1)
    h, w = images[0].shape[:2]
    click.echo(f"{change!r}: wrote {len(images)} frames {w}x{h} at {fps:g} fps to {out}")
