"""Random-init detector checkpoints built from mmpose's shipped configs (selftest and tests)."""

from __future__ import annotations

from pathlib import Path


def write_random_rtmo_checkpoint(path: str | Path, *, name: str = "rtmo-s", seed: int = 0):
    """Build a random-init RTMO from mmpose's shipped config (its own init: finite outputs) and save its
    state dict as a checkpoint at ``path``. Needs the OpenMMLab stack. Returns (model, path, config path)."""
    import logging
    import warnings

    import torch

    from ..detect import detectors as D
    from ..detect.mmpose_compat import import_mmpose

    import_mmpose()
    from mmengine.logging import MMLogger
    from mmpose.apis import init_model

    MMLogger.get_current_instance().setLevel(logging.ERROR)
    cfg = D.config_path(D.DETECTORS[name].pose.config)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = init_model(str(cfg), None, device="cpu")
        model.init_weights()
    path = Path(path)
    torch.save({"state_dict": model.state_dict()}, path)
    return model, path, cfg
