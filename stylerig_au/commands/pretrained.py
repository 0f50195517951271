"""``stylerig-au pretrained list|fetch|verify``: the asset registry from the command line."""

from __future__ import annotations

import click

from stylerig_au import pretrained as registry
from stylerig_au.errors import AssetError, StylerigError


@click.group()
def pretrained() -> None:
    """List, fetch and verify the pretrained assets (see README: where weights come from)."""


@pretrained.command("list")
def list_assets() -> None:
    """Show every asset, its licence, its source and whether it is available here."""
    click.echo(f"cache: {registry.cache_dir()}")
    dirs = registry.search_dirs()
    click.echo(f"search path (${registry.ENV_SEARCH_PATH}): {', '.join(map(str, dirs)) or '(none)'}")
    for name, asset in registry.ASSETS.items():
        found, where = registry.locate(name)
        status = f"{where}: {found}" if found else where
        flag = "  [non-commercial: needs --accept-license]" if asset.noncommercial else ""
        click.echo(f"\n{name}{flag}\n  {asset.description}\n  licence: {asset.license}\n  source:  {asset.source.describe()}\n  status:  {status}")
    click.echo("\nTrained by this project (committed under pretrained/, with a model card):")
    for name, own in registry.OWN_ASSETS.items():
        try:
            status = str(registry.own_path(name))
        except AssetError:
            status = f"missing (re-create with '{own.made_by}')"
        click.echo(f"\n{name}\n  {own.description}\n  licence: {own.license}\n  card:    pretrained/{own.card}\n  status:  {status}")


@pretrained.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "fetch_all", is_flag=True, help="Fetch every asset (non-commercial ones only if accepted).")
@click.option("--accept-license", "accepted", multiple=True, metavar="NAME", help="Accept the non-commercial licence of NAME (repeatable; 'all' for every one).")
@click.option("--force", is_flag=True, help="Convert again even if a cached copy exists.")
def fetch(names: tuple[str, ...], fetch_all: bool, accepted: tuple[str, ...], force: bool) -> None:
    """Fetch, verify by hash and convert the named assets (default: all that need no licence acceptance, plus
    those whose licence --accept-license accepts)."""
    for name in accepted:
        if name != "all":
            registry.get(name)  # an unknown name is an error, not a silent no-op
    if not names:
        names = tuple(n for n, a in registry.ASSETS.items()
                      if fetch_all or not a.noncommercial or n in accepted or "all" in accepted)
    failures = 0
    for name in names:
        asset = registry.get(name)
        accept = name in accepted or "all" in accepted
        if fetch_all and not registry.license_accepted(asset, accept):
            click.echo(f"skip {name}: non-commercial licence not accepted (use --accept-license {name})")
            continue
        try:
            click.echo(f"{name}: {registry.fetch(name, accept_license=accept, force=force)}")
        except AssetError as err:
            click.echo(f"error: {err}", err=True)
            failures += 1
    if failures:
        raise StylerigError(f"{failures} of {len(names)} assets could not be fetched (see above)")


@pretrained.command("verify")
@click.argument("names", nargs=-1)
def verify(names: tuple[str, ...]) -> None:
    """Re-hash assets against their recorded hashes.

    With NAMES, each must be present and intact. Without, every available asset is checked and
    the ones not fetched yet are only listed.
    """
    bad = 0
    for name in names or tuple(registry.ASSETS):
        if not names and registry.locate(name)[0] is None:
            click.echo(f"--  {name}: not fetched")
            continue
        ok, message = registry.verify(name)
        click.echo(f"{'ok ' if ok else 'BAD'} {name}: {message}")
        bad += not ok
    if bad:
        raise StylerigError(f"{bad} asset(s) missing or corrupt; fetch them with 'stylerig-au pretrained fetch NAME'")
