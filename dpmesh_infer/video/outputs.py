"""The final files of a video run, assembled from its stored chunks (each written atomically, and
``tracks.json`` last: the run is finished when it exists; a re-run rewrites all of them)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..atomic import write_bytes

logger = logging.getLogger(__name__)

DONE_FILE = "tracks.json"


def write_outputs(summary, store, info, plan, chunks, body, opts, *, faces: np.ndarray, make_renderer=None) -> None:
    """tracks.npz, scene.glb, with ``opts.render`` overlay.mp4 and side.mp4, then tracks.json."""
    from ..render import person_colors
    from .gltf import build_rig_glb, rigs_for_tracks
    from .tracks import assemble_tracks, tracks_document, write_tracks_json, write_tracks_npz

    out = Path(store.out_dir)
    (out / DONE_FILE).unlink(missing_ok=True)  # unfinished until the end
    samples = plan.samples
    ts = assemble_tracks(chunks, n_samples=len(samples), sample_frame=np.array([s.frame for s in samples]),
                         sample_time=np.array([s.time for s in samples]), fps=plan.fps,
                         image_size=(info.width, info.height), body=body, tracker=opts.tracker,
                         smoothing=opts.smoothing, device=body.device)
    summary.tracks, summary.untracked = len(ts.tracks), ts.untracked
    files = [write_tracks_npz(ts, out / "tracks.npz")]
    colors = person_colors(max((t.track_id for t in ts.tracks), default=-1) + 1)
    t0 = float(samples[0].time)
    end = float(samples[-1].time) - t0 + 1.0 / plan.fps
    glb = build_rig_glb(rigs_for_tracks(ts, lambda tid: colors[tid]), body.arrays, faces, K=ts.K,
                        image_size=ts.image_size, animate=True, timeline_end=end,
                        extras={"fps": plan.fps, "samples": len(samples), "K": ts.K.tolist(),
                                "image_size": list(ts.image_size), "video": str(info.path.name),
                                "first_frame": int(samples[0].frame)})
    files.append(write_bytes(out / "scene.glb", glb))
    if opts.render:
        from .encode import render_videos

        renderer = make_renderer()
        try:
            files.extend(render_videos(info, plan, ts, body, faces, renderer, out))
        finally:
            renderer.close()
    else:
        for name in ("overlay.mp4", "side.mp4"):
            (out / name).unlink(missing_ok=True)  # an older run's renders would not match these tracks
    sampling = opts.sampling.to_json()
    doc = tracks_document(ts, video=info.describe(), sampling=sampling, tracker=opts.tracker,
                          smoothing=opts.smoothing, files=[p.name for p in files] + [DONE_FILE],
                          extra={"chunks": {"total": len(summary.records), "failed": [r.chunk for r in summary.failed]},
                                 "missing_frames": summary.missing_frames})
    files.append(write_tracks_json(doc, out / DONE_FILE))
    summary.files = files
