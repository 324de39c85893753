"""How every ``dpmesh`` command reports failures: one message, no traceback, a distinct exit code."""

from __future__ import annotations

import functools

import typer
from rich.console import Console
from rich.markup import escape

from .errors import DpmeshError

err_console = Console(stderr=True, soft_wrap=True)


def handle_errors(fn):
    """Turn DpmeshError into its message and exit code; Ctrl-C into exit 130."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DpmeshError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper
