"""How every ``dpmesh`` command reports failures: one message, no traceback, a distinct exit code."""

from __future__ import annotations

import functools
import logging

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import DpmeshError

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


def setup_logging(verbose: int, quiet: bool = False) -> None:
    """Log to stderr through rich: WARNING by default, INFO with -v, DEBUG with -vv, ERROR with --quiet."""
    level = logging.WARNING if not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    if quiet:
        level = logging.ERROR
    from rich.logging import RichHandler

    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err_console,
                        show_path=False)], force=True)
