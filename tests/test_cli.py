"""The dpmesh CLI: outputs, messages and exit codes (typer runner and real subprocesses)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.cli import app

runner = CliRunner()


@pytest.fixture()
def photo(tmp_path, scene):
    image, kp = scene
    img = tmp_path / "crowd.jpg"
    Image.fromarray(image).save(img, quality=95)
    entries = [{"keypoints": k.reshape(-1).tolist(), "score": 0.9, "category_id": 1} for k in kp]
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps(entries))
    return img, kp_file


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_predict_npz_obj_json(photo, tiny_weights, tmp_path):
    img, kp = photo
    r = run("predict", img, "--keypoints", kp, "--weights", tiny_weights, "--out", tmp_path / "m.npz")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert z["vertices"].shape == (2, 6890, 3) and z["K"].shape == (3, 3)
        assert z["keypoints_2d"].shape == (2, 30, 3) and z["joints_2d"].shape == (2, 30, 2)
        assert z["body_pose"].shape == (2, 23, 3) and z["betas"].shape == (2, 10)
    r = run("predict", img, "-k", kp, "-w", tiny_weights, "-o", tmp_path / "m.obj")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "m.obj").read_text()
    assert text.count("\no person_") == 2
    params = json.loads((tmp_path / "m.json").read_text())
    assert params["schema_version"] == 1 and len(params["persons"]) == 2
    assert len(params["persons"][0]["smpl"]["body_pose"]) == 23


def test_predict_folder_output_for_several_images(photo, tiny_weights, tmp_path):
    img, _ = photo
    img2 = tmp_path / "b.png"
    Image.open(img).save(img2)
    entries = []
    for name in ("crowd.jpg", "b.png"):
        from dpmesh_infer.stand_ins.scene import synthetic_scene

        for k in synthetic_scene()[1]:
            entries.append({"file_name": name, "keypoints": k.reshape(-1).tolist(), "score": 1.0})
    kpf = tmp_path / "many.json"
    kpf.write_text(json.dumps(entries))
    out = tmp_path / "out"
    r = run("predict", img, img2, "-k", kpf, "-w", tiny_weights, "-o", out)
    assert r.exit_code == 0, r.output
    for stem in ("crowd", "b"):  # folder layout of dpmesh_infer.batch
        for name in ("people.json", "params.npz", "person_00.obj", "person_01.obj", "scene.glb"):
            assert (out / stem / name).is_file()
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2


def test_exit_codes_and_messages(photo, tiny_weights, tmp_path):
    img, kp = photo
    r = run("predict", img, "-k", kp, "-w", tmp_path / "missing", "-o", tmp_path / "x.npz")
    assert r.exit_code == 3 and "convert-official" in r.output and "Traceback" not in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('[{"keypoints": [1, 2, 3]}]')
    r = run("predict", img, "-k", bad, "-w", tiny_weights, "-o", tmp_path / "x.npz")
    flat = " ".join(r.output.split())
    assert r.exit_code == 2 and "'keypoints' has 3 numbers, expected 51 (coco17: 17 joints" in flat, r.output
    r = run("predict", tmp_path / "nope.jpg", "-k", kp, "-w", tiny_weights, "-o", tmp_path / "x.npz")
    assert r.exit_code == 2 and "not found" in r.output  # a missing input is a usage error (README)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    r = run("predict", broken, "-k", kp, "-w", tiny_weights, "-o", tmp_path / "x.npz")
    assert r.exit_code == 4 and "cannot read image" in r.output
    empty = tmp_path / "empty.json"
    entries = json.loads(kp.read_text())
    for e in entries:
        e["keypoints"] = [0.0] * 51
    empty.write_text(json.dumps(entries))
    r = run("predict", img, "-k", empty, "-w", tiny_weights, "-o", tmp_path / "x.npz")
    assert r.exit_code == 4 and "no person" in r.output
    r = run("predict", img, "-k", kp, "-w", tiny_weights, "-o", tmp_path / "x.xyz")
    assert r.exit_code == 2


def test_weights_check(tiny_weights):
    r = run("weights", "check", "--weights", tiny_weights)
    assert r.exit_code == 0 and "untrained" in r.output


def test_import_smpl_cli(tmp_path):
    from dpmesh_infer.stand_ins.smpl import write_synthetic_smpl_pkl

    pkl = write_synthetic_smpl_pkl(tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl")
    r = run("weights", "import-smpl", pkl, "--weights", tmp_path / "w")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "w" / "smpl" / "SMPL_NEUTRAL.npz").is_file()
    r = run("weights", "import-smpl", tmp_path / "none.pkl", "--weights", tmp_path / "w")
    assert r.exit_code == 3


def test_console_script_help_and_version():
    r = subprocess.run([sys.executable, "-m", "dpmesh_infer.cli", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "predict" in r.stdout and "selftest" in r.stdout
    r = subprocess.run([sys.executable, "-m", "dpmesh_infer.cli", "--version"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "dpmesh" in r.stdout


HEAVY = ("torch", "numpy", "diffusers", "transformers", "peft", "smplx", "trimesh", "cv2", "PIL", "scipy",
         "mmpose", "mmengine", "pyrender", "OpenGL", "accelerate", "safetensors")


_RUN_MAIN = "from dpmesh_infer.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass"


@pytest.mark.parametrize("code", [
    "import dpmesh_infer",
    "import dpmesh_infer; dpmesh_infer.__version__",
    # exactly what `dpmesh --help` runs: the whole command tree is built, no command executes
    "import sys; sys.argv = ['dpmesh', '--help']\n" + _RUN_MAIN,
    "import sys; sys.argv = ['dpmesh', 'predict', '--help']\n" + _RUN_MAIN,
])
def test_import_and_help_are_light(code):
    probe = code + "\nimport sys\nprint('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & set(%r)))" % (HEAVY,)
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []", r.stdout[-500:]


def test_selftest_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dpmesh_infer.cli", "selftest", "--keep", str(tmp_path / "st")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "UNTRAINED" in r.stdout and "selftest passed" in r.stdout
    assert (tmp_path / "st" / "outputs" / "selftest.glb").is_file()
    assert "detector" in r.stdout and "render" in r.stdout  # run, or reported as skipped with the reason


def test_fetch_detector_offline_names_file_url_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("DPMESH_NO_DOWNLOAD", "1")
    r = run("weights", "fetch", "--detector", "rtmo-l", "--weights", tmp_path / "w", "--no-progress")
    assert r.exit_code == 3, r.output
    assert "https://download.openmmlab.com/" in r.output and str(tmp_path / "w" / "detectors") in r.output
    assert "dpmesh weights fetch --detector rtmo-l" in r.output
    r = run("weights", "fetch", "--detector", "nope", "--weights", tmp_path / "w")
    assert r.exit_code == 2


def test_max_pixels_refuses_large_images(photo, tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("DPMESH_MAX_PIXELS", "100000000")  # restored after the test
    img, kp = photo
    r = run("predict", img, "-k", kp, "-w", tiny_weights, "-o", tmp_path / "x.npz", "--max-pixels", "1000")
    assert r.exit_code == 4 and "exceeds" in r.output and "pixels" in r.output


def test_readme_exit_code_table_is_the_one_the_code_uses():
    import re
    from pathlib import Path

    from dpmesh_infer.errors import EXIT_CODES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("#### Exit codes"):]
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|$", section[:section.index("####", 5)], re.M))
    assert {int(k): v for k, v in rows.items()} == EXIT_CODES
