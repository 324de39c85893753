"""Training (docs/TRAINING.md). Stages never import this package; nothing heavy runs on import.

- :mod:`.vqvae` — VQ-VAE pose prior pre-training on AMASS poses (``dpmesh train vqvae``).
- :mod:`.config` — :class:`~.config.TrainConfig`, the JSON configuration of ``dpmesh train dpmesh``.
- :mod:`.augment`, :mod:`.samples` — augmentations (PoseFix detector errors, SynthOcc, geometry,
  colour) and the per-person training sample.
- :mod:`.data` — the person index, deterministic epoch order and the torch dataset.
- :mod:`.model` — the trainable model, its initialisation (SD1.5 + ControlNet, weights, tiny) and export.
- :mod:`.losses` — L2D, L3D, LSMPL and LNKR.
- :mod:`.trainer` — :func:`~.trainer.train_dpmesh` (accelerate, checkpoints, exact resume, logs).
- :mod:`.cli` — the ``dpmesh train`` commands.
"""
