"""``dpmesh demo``: a Gradio web app around the pipeline (upload photos, see and download the results).

- :mod:`.service` -- what every request shares: the weights status, ONE pipeline loaded once, one
  renderer, the detectors, a lock, and the folder of the runs' outputs;
- :mod:`.run` -- THE run function, plain Python (no Gradio): photos + options -> the keypoint pictures,
  the overlay and side view, ``scene.glb``, a per-person table, the zip of the folder-run layout, and
  messages (every failure is a message, never an exception);
- :mod:`.draw` -- the photo with the keypoints and boxes each person was reconstructed from;
- :mod:`.examples` -- generated example photos and their keypoint file (no downloaded photos);
- :mod:`.app` -- the Gradio page and API wired to :func:`.run.run_demo` (Gradio is imported only there,
  and only when the app is built).
"""
