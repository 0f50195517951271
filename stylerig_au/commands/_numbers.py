"""The click types of every numeric option: each has a range, and floats must be finite.

click's own ``FloatRange`` lets ``nan`` through (every comparison with nan is false) and ``inf``
through a missing bound, so a ``--w-reg nan`` would reach the optimiser. Commands use these instead
of ``type=float`` / ``click.FloatRange`` / a bare ``type=int``.
"""

from __future__ import annotations

import math

import click

MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are 32-bit unsigned at most
MAX_THREADS = 1024
MAX_WORKERS = 256


class FiniteFloat(click.FloatRange):
    """``click.FloatRange`` that also refuses nan and ±inf (``FiniteFloat(0, 1)``, ``FiniteFloat(0, min_open=True)``)."""

    name = "number"

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


SEED = click.IntRange(0, MAX_SEED)
THREADS = click.IntRange(1, MAX_THREADS)
WORKERS = click.IntRange(1, MAX_WORKERS)
LEARNING_RATE = FiniteFloat(0, 1, min_open=True)  # Adam steps above 1 only diverge
PSI = FiniteFloat(0, 1)  # truncation: 0 the average face, 1 none
