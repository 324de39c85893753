"""Analyses of the pipeline's results (``dpmesh occlusion-map``, per-person visibility).

- :mod:`.occlusion`: PARE-style occlusion-sensitivity maps (:func:`~.occlusion.occlusion_map`);
  :mod:`.occlusion_run` writes them for a photo, :mod:`.figures` draws them (matplotlib).
- :mod:`.visibility`: the share of confident keypoints and the occlusion ratio from rendered depth.

Nothing heavy is imported here.
"""
