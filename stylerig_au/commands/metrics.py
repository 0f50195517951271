"""``stylerig-au metrics A B``: reconstruction metrics between two images (or two folders, by file stem)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from stylerig_au.errors import StylerigError


@click.command()
@click.argument("first", type=click.Path(exists=True, path_type=Path))
@click.argument("second", type=click.Path(exists=True, path_type=Path))
@click.option("--size", default=256, show_default=True, type=click.IntRange(16, 4096), help="Both images are resized to size² first.")
@click.option("--no-identity", is_flag=True, help="Skip the identity distances (dlib's and SFace's).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def metrics(first: Path, second: Path, size: int, no_identity: bool, as_json: bool) -> None:
    """MSE, PSNR, SSIM, LPIPS-VGG and two identity distances between FIRST and SECOND.

    identity_dlib: dlib's descriptor distance (same person < 0.6; the evaluations' judge); identity_sface:
    SFace's cosine distance (same person below about 0.6; the default training identity term).

    With two folders, images are paired by file stem (``x.png`` with ``x_recon.png`` too).
    """
    from stylerig_au import metrics as m
    from stylerig_au.imageio import list_images, load_image, resize

    if first.is_dir() != second.is_dir():
        raise StylerigError("give two images or two folders")
    if first.is_dir():
        right = {p.stem.removesuffix("_recon"): p for p in list_images([second])}
        pairs = [(p, right[p.stem.removesuffix("_recon")]) for p in list_images([first]) if p.stem.removesuffix("_recon") in right]
        if not pairs:
            raise StylerigError(f"no images with matching names in {first} and {second}")
    else:
        pairs = [(first, second)]
    rows, failed = [], 0
    for a, b in pairs:
        try:
            x, y = resize(load_image(a), (size, size)), resize(load_image(b), (size, size))
            rows.append({"a": str(a), "b": str(b), **m.compare(x, y, lpips_size=None, identity=not no_identity)})
        except StylerigError as err:  # one bad pair: say which, go on with the others
            message = f"{a} vs {b}: {_name_the_image(str(err), a, b)}"
            if len(pairs) == 1:
                raise StylerigError(message) from None
            click.echo(f"error: {message}", err=True)
            failed += 1
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    elif rows:
        _print_table(rows)
    if failed:
        raise StylerigError(f"{failed} of {len(pairs)} pairs could not be measured (see above); "
                            "--no-identity skips the identity distance")


def _name_the_image(message: str, a: Path, b: Path) -> str:
    """A metrics message with 'the first/second image' replaced by the file's name."""
    return message.replace("the first image", f"{a.name}").replace("the second image", f"{b.name}")


def _print_table(rows: list[dict]) -> None:
    keys = [k for k in rows[0] if k not in ("a", "b")]
    click.echo(f"{'image':<30}" + "".join(f"{k:>19}" for k in keys))
    for r in rows:
        click.echo(f"{Path(r['a']).name[:29]:<30}" + "".join(f"{r[k]:>19.4f}" for k in keys))
