"""``dpmesh demo``: the Gradio web demo (dpmesh_infer.demo), served on 127.0.0.1 unless asked otherwise.

Gradio, torch and the pipeline are imported inside the command only (``dpmesh --help`` stays light).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from ..errors import InputError
from .common import console, device_option, err_console, handle_errors, setup_logging, verbose_option, weights_option

app = typer.Typer()


def _check_port(host: str, port: int) -> None:
    """InputError now (before the model loads) when ``host:port`` cannot be bound."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise InputError(f"--host {host}: cannot resolve it ({e})") from e
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            why = e.strerror or e
            raise InputError(f"cannot serve on {host}:{port} ({why}); choose another port with --port") from e


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
@handle_errors
def demo(
    weights: Optional[Path] = weights_option(),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind. The default serves this machine only; "
                             "0.0.0.0 (or another address) makes the demo reachable from the network."),
    port: int = typer.Option(7860, "--port", help="Port to serve on."),
    device: str = device_option(),
    dtype: str = typer.Option("auto", help="Network dtype: auto (fp16 on CUDA, fp32 on CPU), fp16, bf16, fp32."),
    share: bool = typer.Option(False, "--share", help="Also create a public link through Gradio's share service "
                               "(anyone with the link can use the demo)."),
    max_images: int = typer.Option(8, "--max-images", help="Most photos in one run."),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="Refuse photos with more pixels, as "
                                             "`dpmesh predict` (default 100 million or $DPMESH_MAX_PIXELS)."),
    max_file_size: str = typer.Option("200mb", "--max-file-size", help="Largest upload (Gradio size: 200mb, 1gb, "
                                      "or bytes)."),
    queue_size: int = typer.Option(16, "--queue-size", help="Requests that may wait while one runs; more are "
                                   "refused until the queue drains."),
    det_config: Optional[Path] = typer.Option(None, "--det-config", help="Your own mmpose detector config."),
    det_checkpoint: Optional[Path] = typer.Option(None, "--det-checkpoint", help="Checkpoint for --det-config."),
    no_render: bool = typer.Option(False, "--no-render", help="No overlay or side view (no pyrender/OpenGL)."),
    verbose: int = verbose_option(),
):
    """Serve the web demo: upload photos; see the meshes over the photo, a side view, the 3D scene and a
    per-person table; download every result as a zip. The same run is an API (gradio_client, /run).

    The model is loaded once and shared; requests run one at a time, the others wait in a bounded queue.

    Without usable weights the page says what is missing and the command that fixes it.

    Stop with Ctrl-C (exit 0). Exit codes: 2 usage error (e.g. the port is in use), 5 gradio is not installed.
    """
    setup_logging(verbose)
    from ..demo.app import build_app, launch, require_gradio
    from ..demo.examples import write_examples
    from ..demo.service import DemoService
    from ..devices import resolve_device

    if not 0 < port < 65536:
        raise InputError(f"--port must be between 1 and 65535, got {port}")
    require_gradio()
    resolve_device(device)  # a bad --device is a usage error, before anything loads
    _check_port(host, port)
    if not _is_loopback(host):
        err_console.print(f"[yellow]warning:[/] --host {host}: the demo is reachable from other machines; anyone "
                          "who can reach this port can upload files and use the model.", highlight=False)
    if share:
        err_console.print("[yellow]warning:[/] --share: a public link through Gradio's share service; anyone with "
                          "the link can upload files and use the model.", highlight=False)
    service = DemoService(weights, device=device, dtype=dtype, max_pixels=max_pixels, max_images=max_images,
                          det_config=det_config, det_checkpoint=det_checkpoint, render=not no_render)
    try:
        status = service.load()
        if not status.ready:
            err_console.print("[yellow]warning:[/] no usable weights (the page says so, and runs fail):",
                              highlight=False)
            err_console.print(status.message, highlight=False, markup=False)
        examples = write_examples(service.work / "examples")
        page = build_app(service, examples=examples, queue_size=queue_size)
        url = launch(page, service, host=host, port=port, share=share, max_file_size=max_file_size)
        console.print(f"dpmesh demo: serving on {url} (Ctrl-C to stop)", highlight=False, markup=False)
        share_url = getattr(page, "share_url", None)
        if share_url:
            console.print(f"dpmesh demo: public link {share_url}", highlight=False, markup=False)
        _serve_until_stopped(page)
    finally:
        service.close()


def _serve_until_stopped(page) -> None:
    """Block until Ctrl-C or SIGTERM, then close the server."""
    import signal
    import threading

    stop = threading.Event()

    def on_term(signum, frame):  # SIGTERM: stop like Ctrl-C
        stop.set()

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
        err_console.print("dpmesh demo: stopping")
        page.close()
