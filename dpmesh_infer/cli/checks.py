"""``dpmesh doctor`` and ``dpmesh selftest``: what this installation can do, and a run on stand-in weights."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, handle_errors, weights_option

app = typer.Typer()


@app.command()
@handle_errors
def doctor(weights: Optional[Path] = weights_option()):
    """Check the installation: Python, torch/CUDA/fp16, packages, detector stack, renderers, weights.

    Exit codes: 0 ready, 3 weights missing (everything is still reported), 1 a core package is broken."""
    from ..doctor import run_doctor

    raise typer.Exit(run_doctor(weights, console=console))


@app.command()
@handle_errors
def selftest(
    keep: Optional[Path] = typer.Option(None, help="Keep the generated weights and outputs in this folder."),
):
    """Run the whole pipeline on generated, UNTRAINED weights and a synthetic image: proves the install."""
    from ..selftest import run_selftest

    ok = run_selftest(keep=keep, console=console)
    raise typer.Exit(0 if ok else 1)
