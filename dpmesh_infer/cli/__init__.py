"""The ``dpmesh`` command line (typer + rich): the only module tree with CLI code; nothing imports it.

One module per command group, each exposing a ``typer.Typer`` named ``app``; groups are mounted under
their name, single commands are merged into the root (one way of mounting). Every expected failure is
a :class:`~dpmesh_infer.errors.DpmeshError`: its message is printed (no traceback) and the process
exits with its code (:data:`dpmesh_infer.errors.EXIT_CODES`). Importing this package imports typer and
rich only: ``dpmesh --help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from .. import __version__
from ..errors import DpmeshError
from . import analysis, checks, data, demo, detect, evaluate, predict, train, weights
from .common import console, err_console

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="3D human meshes (SMPL) from photos of crowded scenes, with DPMesh.")


def _version(value: bool):
    if value:
        console.print(f"dpmesh {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """dpmesh: 3D human meshes from crowd photos."""


for _commands in (predict, detect, evaluate, checks, demo, analysis):
    app.add_typer(_commands.app)
for _name, _group in (("weights", weights), ("train", train), ("data", data)):
    app.add_typer(_group.app, name=_name)


def main() -> None:  # console-script entry point
    try:
        app()
    except DpmeshError as e:  # raised outside a command (e.g. in a callback)
        err_console.print(f"error: {e}", highlight=False, markup=False)
        sys.exit(e.exit_code)
