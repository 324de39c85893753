"""What every ``dpmesh`` command shares: the consoles, the error handler (one message, no traceback,
the exit code of :mod:`dpmesh_infer.errors`), logging setup, and the options several commands take,
declared once."""

from __future__ import annotations

import functools
import logging
import signal
import threading
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import EXIT_INTERRUPTED, EXIT_TERMINATED, DpmeshError, Terminated

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _raise_terminated(signum, frame):
    raise Terminated()


def interrupt_exit_code(exc: BaseException) -> int:
    """143 for SIGTERM (:class:`~dpmesh_infer.errors.Terminated`), 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


def handle_errors(fn):
    """Turn DpmeshError into its message and exit code; Ctrl-C into exit 130 and SIGTERM into 143 (SIGTERM
    is delivered as an interrupt while the command runs, so finished work is kept the same way)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return fn(*args, **kwargs)
        except DpmeshError as e:
            err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            err_console.print("terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted")
            raise typer.Exit(interrupt_exit_code(e)) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    return wrapper


def setup_logging(verbose: int, quiet: bool = False) -> None:
    """Log to stderr through rich: WARNING by default, INFO with -v, DEBUG with -vv, ERROR with --quiet."""
    level = logging.WARNING if not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    if quiet:
        level = logging.ERROR
    from rich.logging import RichHandler

    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err_console,
                        show_path=False)], force=True)


def say_ok(message: str) -> None:
    """``ok: <message>`` on stdout, printed literally (paths may contain markup characters)."""
    console.print(f"ok: {message}", highlight=False, markup=False)


# ------------------------------------------------------------------ options shared by several commands

WEIGHTS_HELP = "Weights directory (default: $DPMESH_WEIGHTS, then ~/.cache/dpmesh)."


def weights_option(help: str = WEIGHTS_HELP) -> Optional[object]:
    """``--weights/-w DIR``."""
    return typer.Option(None, "--weights", "-w", help=help)


def device_option(help: str = "auto, cpu, cuda or cuda:N.") -> object:
    """``--device``."""
    return typer.Option("auto", "--device", help=help)


def verbose_option() -> object:
    """``--verbose/-v`` (repeatable)."""
    return typer.Option(0, "--verbose", "-v", count=True, help="More logging (-vv for debug).")


def quiet_option(help: str = "No progress bar or summary table (errors still shown).") -> object:
    """``--quiet/-q``."""
    return typer.Option(False, "--quiet", "-q", help=help)


def refine_option() -> object:
    """``--refine`` (keypoint refinement with the default RefineConfig)."""
    return typer.Option(False, "--refine", help="Fit every body to its confident keypoints after the network "
                        "(SMPLify-X style; people.json keeps the unrefined body and the reprojection error "
                        "before/after).")


def refine_config_option() -> object:
    """``--refine-config FILE.json`` (implies --refine)."""
    return typer.Option(None, "--refine-config", help="RefineConfig JSON for --refine (iterations, weights; see "
                        "README); implies --refine.")


def load_refine_config(refine: bool, path):
    """The RefineConfig of --refine (defaults) / --refine-config FILE (implies --refine), or None."""
    if path is None and not refine:
        return None
    from ..errors import InputError
    from ..refine import RefineConfig

    if path is None:
        return RefineConfig()
    if not path.is_file():
        raise InputError(f"--refine-config {path}: no such file")
    return RefineConfig.load_json(path)
