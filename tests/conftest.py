"""Test configuration: never touch the network, keep torch on few threads, deterministic seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("DPMESH_NO_DOWNLOAD", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolate_user_dirs(tmp_path_factory, monkeypatch):
    """No test reads or writes the real user cache or a DPMESH_WEIGHTS from the environment."""
    cache = tmp_path_factory.mktemp("xdg_cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("DPMESH_WEIGHTS", raising=False)
    yield


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A complete, untrained weights directory in the real on-disk format (built once per session)."""
    from dpmesh_infer.stand_ins.tiny import build_tiny_weights

    return build_tiny_weights(tmp_path_factory.mktemp("tiny_weights") / "weights", seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_weights):
    from dpmesh_infer import Pipeline

    return Pipeline.from_pretrained(tiny_weights, device="cpu")


@pytest.fixture(scope="session")
def scene():
    """A synthetic 640x480 photo with two people and their COCO-17 keypoints (2, 17, 3)."""
    from dpmesh_infer.stand_ins.scene import synthetic_scene

    return synthetic_scene()
