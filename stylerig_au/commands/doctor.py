"""``stylerig-au doctor``: what this machine offers and what the toolkit will use."""

from __future__ import annotations

import click

from stylerig_au.diagnostics import collect_report


@click.command()
@click.option("--build-ops", is_flag=True, help="Also try to JIT-build the CUDA ops now (needs a GPU, nvcc and ninja).")
def doctor(build_ops: bool) -> None:
    """Report Python, torch, CUDA, GPU, compilers, the active op implementations and every asset."""
    for section, rows in collect_report(build_ops=build_ops).items():
        click.echo(f"[{section}]")
        width = max(len(key) for key in rows) if rows else 0
        for key, value in rows.items():
            click.echo(f"  {key.ljust(width)}  {value}")
