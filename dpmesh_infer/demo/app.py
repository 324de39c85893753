"""The Gradio page (and API) of ``dpmesh demo``, wired to :func:`~dpmesh_infer.demo.run.run_demo`.

Gradio is imported only by :func:`require_gradio` (called when the app is built), never when the
package or the CLI is imported. The page: photos (one or more) and an optional keypoint file, the
detector's thresholds and the camera in an accordion, generated examples, Run; then messages, the
photo with keypoints and boxes, the meshes over the photo, a side view, the interactive 3D scene
(``scene.glb`` in Gradio's Model3D), the per-person table and the zip of every file. The same run is
the API endpoint ``/run`` (``gradio_client.Client(url).predict(images=[handle_file(p)], ...,
api_name="/run")``). One run at a time (the model is shared); further requests wait in Gradio's queue
(bounded: ``queue_size``).
"""

from __future__ import annotations

import html
import logging
import os
import re
from pathlib import Path

from ..errors import DependencyError, DpmeshError, InputError
from .run import CAMERA_MODES, TABLE_COLUMNS, DemoResult, Message, demo_options, run_demo

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'dpmesh-infer[demo]' (or bash install.sh)"
DEFAULT_QUEUE_SIZE = 16
DEFAULT_MAX_FILE_SIZE = "200mb"
GALLERY_HEIGHT = 340
READING_GUIDE = (
    "**Reading the results.** *Keypoints and crop boxes*: the 2D keypoints and the square crop each person "
    "was reconstructed from, in the colour of its mesh (grey: skipped). *Meshes over the photo*: every person "
    "in the photo's camera; nearer people hide farther ones. *Side view*: the same people turned 90° about the "
    "vertical axis (depth becomes visible). *3D scene*: `scene.glb`, drag to turn, scroll to zoom. *People*: one "
    "row per person: reconstructed (score, keypoints above the confidence threshold, crop box, depth of the "
    "pelvis), skipped (why), or dropped by the detector's thresholds. *Download*: the layout of `dpmesh predict "
    "photos/ --out results/ --render`: per photo `people.json` (SMPL parameters, K), `params.npz`, one "
    "`person_NN.obj` per person, `scene.glb`, the pictures; `manifest.jsonl` and the `keypoints.json` used."
)
TITLE = "DPMesh: 3D people from crowd photos"

CSS = """
.dpm-msg { border-radius: 6px; padding: 8px 12px; margin: 4px 0; border-left: 5px solid; }
.dpm-msg p, .dpm-msg pre { margin: 2px 0; }
.dpm-msg code { font-size: 0.9em; }
.dpm-msg pre { white-space: pre-wrap; font-size: 0.85em; background: transparent; border: 0; padding: 0; }
.dpm-error { background: #fdecea; border-color: #d93025; color: #5f1410; }
.dpm-warning { background: #fff4e5; border-color: #f29900; color: #5c3b00; }
.dpm-info { background: #e8f4ea; border-color: #188038; color: #0d3c1a; }
.dpm-ready { background: #eef3fd; border-color: #1a73e8; color: #0b2a5b; }
#dpm-intro p { margin: 2px 0; }
#people-table td, #people-table th { font-size: 13px; }
"""

_CODE = re.compile(r"`([^`]+)`")
_LABELS = {"error": "Error:", "warning": "Warning:", "info": "Done:", "ready": "Model:"}


def _code(escaped: str) -> str:
    """`spans` of already escaped text as <code>."""
    return _CODE.sub(r"<code>\1</code>", escaped)


def require_gradio():
    """Import and return gradio (analytics off unless ``GRADIO_ANALYTICS_ENABLED`` says otherwise).

    Raises:
        DependencyError: gradio is not installed (exit 5), with the install command.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError as e:
        raise DependencyError(f"dpmesh demo needs gradio, which is not installed ({e}). Install it: "
                              f"{INSTALL_HINT}") from e
    return gradio


# ------------------------------------------------------------------------------------------ plain parts

def messages_html(messages: list[Message]) -> str:
    """Messages as HTML boxes (text escaped; `code` spans kept; multi-line text preformatted)."""
    parts = []
    for m in messages:
        text = html.escape(m.text)
        if "\n" in m.text:
            body = f"<pre>{text}</pre>"
        else:
            body = f"<p>{_code(text)}</p>"
        parts.append(f'<div class="dpm-msg dpm-{m.level}"><strong>{_LABELS.get(m.level, "")}</strong>{body}</div>')
    return "\n".join(parts)


def status_html(service) -> str:
    """The banner at the top of the page: what the model is, untrained, or what is missing and the fix."""
    from .service import GET_WEIGHTS_HINT

    st = service.status
    if not st.ready:
        e = html.escape
        fixes = "".join(f"<pre>{e(f)}</pre>" for f in st.fixes)
        return (f'<div class="dpm-msg dpm-error"><strong>The demo cannot run: no usable weights.</strong>'
                f"<p>{e(st.summary[:1].upper() + st.summary[1:])}.</p>"
                + (f"<p>Fix with:</p>{fixes}" if fixes else "")
                + f"<p>{_code(e(GET_WEIGHTS_HINT))}</p>"
                f"<details><summary>Details: every missing file and where the demo looked</summary>"
                f"<pre>{e(st.message)}</pre></details></div>")
    return messages_html([Message("warning" if st.untrained else "ready", st.message)])


def handle_run(service, images, keypoint_file, detector, det_thr, kpt_thr, max_people, camera, camera_value,
               progress=None) -> DemoResult:
    """The page's values -> :func:`run_demo`; never raises (bad options and bugs become messages)."""
    try:
        options = demo_options(keypoint_file, detector, det_thr, kpt_thr, max_people, camera, camera_value)
        if isinstance(images, (str, os.PathLike)):
            images = [images]
        return run_demo(service, images, options, progress=progress)
    except DpmeshError as e:
        return DemoResult.failed(str(e))
    except Exception as e:  # noqa: BLE001 -- never a stack trace in the page; the server log has it
        logger.exception("demo: run failed")
        return DemoResult.failed(f"internal error ({type(e).__name__}: {e}); see the server log")


def gallery(items: list[tuple[Path | None, str]]) -> list[tuple[str, str]]:
    return [(str(p), caption) for p, caption in items if p is not None]


# ------------------------------------------------------------------------------------------ the page

def build_app(service, *, examples=None, queue_size: int = DEFAULT_QUEUE_SIZE):
    """The Gradio Blocks of the demo (queued: one run at a time, at most ``queue_size`` waiting).

    Args:
        service: a :class:`~dpmesh_infer.demo.service.DemoService` (its pipeline is loaded here if not yet).
        examples: :class:`~dpmesh_infer.demo.examples.Examples` to offer, or None for none.
    """
    gr = require_gradio()
    if queue_size < 1:
        raise InputError("--queue-size must be at least 1")
    service.status  # load the model once, before the first request
    detectors = service.detector_names
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3 * 3600)) as app:
        gr.Markdown(f"# {TITLE}\n"
                    "Upload one or more photos (or pick an example below), optionally a keypoint file, and press "
                    "**Run**. Every person becomes an SMPL body mesh placed in the photo's camera "
                    "([DPMesh](https://github.com/RammusLeo/DPMesh), CVPR 2024).", elem_id="dpm-intro")
        gr.HTML(status_html(service), elem_id="weights-status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                photos = gr.File(label="1. Photos (JPEG, PNG, WebP, ...; one or more)", file_count="multiple",
                                 file_types=["image"], elem_id="photos")
                keypoints = gr.File(label="2. Keypoint file (optional; without it the keypoint detector runs)",
                                    file_types=[".json"], elem_id="keypoint-file")
                with gr.Accordion("Keypoint detector (used without a keypoint file)", open=False):
                    detector = gr.Dropdown(detectors, value=detectors[0], label="detector", elem_id="detector")
                    det_thr = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="person score threshold")
                    kpt_thr = gr.Slider(0.0, 1.0, value=0.3, step=0.01, label="keypoint score threshold")
                    max_people = gr.Number(0, precision=0, minimum=0, label="max people per photo (0 = no limit)")
                with gr.Accordion("Camera", open=False):
                    camera = gr.Radio([(label, value) for value, label in CAMERA_MODES.items()], value="default",
                                      label="focal length of the output camera")
                    camera_value = gr.Number(0, minimum=0, label="value: pixels or degrees (for those choices)")
                run = gr.Button("3. Run", variant="primary", elem_id="run-button")
                if examples is not None:
                    street, plaza = examples.photos[:2]
                    kp_file = str(examples.keypoints)
                    rows = [[[str(street)], kp_file], [[str(plaza)], kp_file], [[str(street), str(plaza)], kp_file]]
                    gr.Examples(rows, inputs=[photos, keypoints],
                                example_labels=[f"{street.name} + keypoints", f"{plaza.name} + keypoints",
                                                "both photos + keypoints"],
                                label="Examples: generated photos with their keypoint file (click one, then Run)")
            with gr.Column(scale=7, min_width=480):
                messages = gr.HTML("", label="messages", show_label=False, elem_id="messages")
                with gr.Row():
                    kp_gallery = _gallery(gr, "Keypoints and crop boxes", "keypoints-gallery")
                    overlay_gallery = _gallery(gr, "Meshes over the photo", "overlay-gallery")
                with gr.Row():
                    side_gallery = _gallery(gr, "Side view", "side-gallery")
                    with gr.Column():
                        scene = gr.Model3D(label="3D scene", height=GALLERY_HEIGHT,
                                           clear_color=(0.93, 0.94, 0.96, 1.0), elem_id="scene-3d")
                        scene_pick = gr.Dropdown([], label="photo in the 3D scene", visible=False,
                                                 elem_id="scene-pick")
                table = gr.Dataframe(headers=list(TABLE_COLUMNS), interactive=False, max_height=420,
                                     label="People", elem_id="people-table")
                bundle = gr.File(label="Download (zip)", interactive=False, elem_id="bundle")
                gr.Markdown(READING_GUIDE, elem_id="dpm-guide")
        scenes = gr.State({})

        def on_run(images, keypoint_file, detector, det_thr, kpt_thr, max_people, camera, camera_value,
                   progress=gr.Progress()):
            result = handle_run(service, images, keypoint_file, detector, det_thr, kpt_thr, max_people, camera,
                                camera_value, progress=lambda f, text: progress(f, desc=text))
            return page_outputs(gr, result)

        def on_pick(name, table_of_scenes):
            path = (table_of_scenes or {}).get(name)
            return str(path) if path else None

        run.click(on_run, [photos, keypoints, detector, det_thr, kpt_thr, max_people, camera, camera_value],
                  [messages, kp_gallery, overlay_gallery, side_gallery, scene, scene_pick, table, bundle, scenes],
                  api_name="run", concurrency_limit=1, scroll_to_output=True)
        scene_pick.change(on_pick, [scene_pick, scenes], [scene], api_visibility="private")
    app.queue(max_size=queue_size, default_concurrency_limit=1)
    return app


def _gallery(gr, label: str, elem_id: str):
    return gr.Gallery(label=label, columns=1, height=GALLERY_HEIGHT, object_fit="contain", preview=True,
                      elem_id=elem_id, buttons=["download", "fullscreen"])


def page_outputs(gr, result: DemoResult) -> tuple:
    """A :class:`DemoResult` as the values of the run event's outputs."""
    scenes = {name: str(p) for name, p in result.scenes.items()}
    first = next(iter(scenes), None)
    return (
        messages_html(result.messages),
        gallery([(im.keypoints_png, im.photo) for im in result.images]),
        gallery([(im.overlay, im.photo) for im in result.images]),
        gallery([(im.side, im.photo) for im in result.images]),
        scenes.get(first) if first else None,
        gr.update(choices=list(scenes), value=first, visible=len(scenes) > 1),
        {"headers": list(TABLE_COLUMNS), "data": [row.cells() for row in result.rows]},
        str(result.bundle) if result.bundle is not None else None,
        scenes,
    )


def launch(app, service, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
           max_file_size: str | int | None = DEFAULT_MAX_FILE_SIZE) -> str:
    """Start serving ``app`` in the background; returns the local URL.

    Raises:
        InputError: the port cannot be bound (in use, or not allowed).
    """
    try:
        app.launch(server_name=host, server_port=port, share=share, max_file_size=max_file_size,
                   allowed_paths=[str(service.work)], ssr_mode=False, prevent_thread_lock=True, quiet=True,
                   show_error=False, css=CSS, inbrowser=False)
    except OSError as e:
        raise InputError(f"cannot serve on {host}:{port} ({e}); choose another port with --port") from e
    return app.local_url
