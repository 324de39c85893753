"""examples/: the generator, the Python API script and the folder-run script run end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


@pytest.fixture()
def generated(tmp_path):
    _run([sys.executable, str(EXAMPLES / "make_examples.py"), "--out", str(tmp_path / "ex")])
    return tmp_path / "ex"


def test_make_examples(generated):
    from dpmesh_infer.images import load_image
    from dpmesh_infer.keypoint_files import read_keypoints

    assert load_image(generated / "images" / "street.jpg").shape == (480, 640, 3)
    assert load_image(generated / "images" / "plaza.png").shape == (600, 800, 3)
    kps = read_keypoints(generated / "keypoints.json")
    for name in ("street.jpg", "plaza.png"):
        assert len(kps.lookup(name)) == 2


def test_example_api(generated, tiny_weights, tmp_path):
    out = tmp_path / "api"
    r = _run([sys.executable, str(EXAMPLES / "example_api.py"), "--weights", str(tiny_weights), "--examples",
              str(generated), "--out", str(out), "--device", "cpu"])
    assert "UNTRAINED" in r.stdout and "street.jpg: 2 persons" in r.stdout
    for stem in ("street", "plaza"):
        assert (out / f"{stem}.glb").stat().st_size > 0
        assert len(json.loads((out / f"{stem}.json").read_text())["persons"]) == 2


def test_example_folder_run(generated, tiny_weights, tmp_path):
    import shutil

    ex = tmp_path / "copy"
    shutil.copytree(generated, ex)
    for name in ("example_folder_run.sh", "make_examples.py"):
        shutil.copy(EXAMPLES / name, ex / name)
    env = dict(os.environ, DPMESH=f"{sys.executable} -m dpmesh_infer.cli")
    _run(["bash", str(ex / "example_folder_run.sh"), str(tiny_weights)], env=env)
    rows = [json.loads(line) for line in (ex / "out_folder" / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["done", "done", "skipped", "skipped", "done", "done"]
    assert all("--fov 60" in r["focal_source"] for r in rows[-2:])
    for stem in ("street", "plaza"):
        assert (ex / "out_folder" / stem / "people.json").is_file()


def test_train_smoke_script(tmp_path):
    """examples/train_smoke.sh: synthetic data -> tiny training (teacher, student) -> evaluation."""
    env = dict(os.environ, DPMESH=f"{sys.executable} -m dpmesh_infer.cli", SMOKE_STEPS="1", SMOKE_IMAGES="4")
    run = tmp_path / "smoke"
    r = _run(["bash", str(EXAMPLES / "train_smoke.sh"), str(run)], env=env)
    assert "MPJPE" in r.stdout or "mpjpe" in r.stdout.lower()
    report = json.loads((run / "eval.json").read_text())
    rows = {(row["split"], row["subset"]) for row in report["rows"]}
    assert ("test", None) in rows
    test_row = next(row for row in report["rows"] if row["split"] == "test" and row["subset"] is None)
    assert test_row["evaluated"] > 0 and test_row["mpjpe"] > 0
    for stage in ("teacher", "student"):
        assert (run / "train" / stage / "pipeline.json").is_file()
        assert (run / "train" / stage / "smpl" / "J_regressor_h36m.npy").is_file()
