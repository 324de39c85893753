"""Test configuration: never touch the network, keep torch on few threads, deterministic seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_OFFLINE", "1")
os.environ.setdefault("DPMESH_NO_DOWNLOAD", "1")

# Under pytest-xdist (README: `python3 -m pytest -q` runs `-n auto`), each worker gets its share of the
# cores: torch's own thread pool would otherwise oversubscribe them (and subprocesses inherit the limit).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _WORKERS > 1:
    _threads = str(max(1, (os.cpu_count() or 1) // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)

import gzip  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"


def official_layout() -> dict:
    """Key -> {"shape", "dtype"} of the official release checkpoint (tests/data, vendored and compressed)."""
    with gzip.open(DATA / "official_checkpoint_layout.json.gz", "rt", encoding="utf-8") as f:
        data = json.load(f)
    data.pop("_notes", None)
    return data


@pytest.fixture(autouse=True)
def _isolate_user_dirs(tmp_path_factory, monkeypatch):
    """No test reads or writes the real user cache or a DPMESH_WEIGHTS from the environment."""
    cache = tmp_path_factory.mktemp("xdg_cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("DPMESH_WEIGHTS", raising=False)
    yield


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """In-process CLI runs (CliRunner) call ``logging.basicConfig(force=True)``, ERROR with ``-q``: put the
    root logger's level and handlers back, so a later test's caplog still sees warnings."""
    import logging

    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


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
