"""`dpmesh doctor`: the report, the weights rows with their fix commands, and the exit codes."""

import pytest
from typer.testing import CliRunner

from dpmesh_infer import doctor
from dpmesh_infer.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch):
    from dpmesh_infer import cli

    monkeypatch.setattr(cli.console, "width", 400)  # no wrapping inside table cells


@pytest.fixture(autouse=True)
def _no_mmpose_import(monkeypatch):
    """Importing the OpenMMLab stack takes seconds; the detector row is tested separately below."""
    monkeypatch.setattr(doctor, "_detector_stack", lambda: [doctor.Check("detector", "mmpose stack", "ok", "stub")])


def test_complete_tiny_weights_exit_0(tiny_weights):
    r = runner.invoke(app, ["doctor", "--weights", str(tiny_weights)])
    assert r.exit_code == 0, r.output
    for text in ("python", "torch", "CUDA", "diffusers", "peft", "smplx", "trimesh", "pyrender", "EGL",
                 "OSMesa", str(tiny_weights), "smpl/SMPL_NEUTRAL.npz", "UNTRAINED", "ready"):
        assert text in r.output, text
    assert "missing" not in r.output.replace("--weights", "")


def test_empty_dir_lists_every_missing_file_with_its_fix(tmp_path):
    empty = tmp_path / "w"
    empty.mkdir()
    r = runner.invoke(app, ["doctor", "--weights", str(empty)])
    assert r.exit_code == 3, r.output
    from dpmesh_infer.weights.layout import required_files

    for rel in required_files():  # every file of the layout has its own row
        assert any(rel in line and "missing" in line for line in r.output.splitlines()), rel
    assert f"dpmesh weights convert-official /path/to/3dpw_best_ckpt.pth.tar --out {empty}" in r.output
    assert f"dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights {empty}" in r.output
    assert f"dpmesh weights fetch --detector rtmo-l --weights {empty}" in r.output
    assert "weights missing" in r.output and "Traceback" not in r.output
    # still printed everything else
    assert "torch" in r.output and "pyrender" in r.output


def test_no_weights_anywhere(tmp_path):
    r = runner.invoke(app, ["doctor"])  # conftest points the user cache at an empty temp dir
    assert r.exit_code == 3, r.output
    assert "looked in" in r.output and "user cache" in r.output


def test_weights_rows_match_the_layout_manifest(tiny_weights, tmp_path):
    import shutil

    from dpmesh_infer.weights.layout import fix_command, missing_files

    w = tmp_path / "w"
    shutil.copytree(tiny_weights, w)
    (w / "regressor" / "model.safetensors").unlink()
    (w / "smpl" / "SMPL_NEUTRAL.npz").unlink()
    rows = [c for c in doctor.collect(w, detector_stack=False) if c.status == "missing"]
    assert sorted(c.name for c in rows) == sorted(missing_files(w)) == ["regressor/model.safetensors",
                                                                       "smpl/SMPL_NEUTRAL.npz"]
    assert [c.fix for c in rows] == [fix_command(c.name, w) for c in rows]
    assert "import-smpl" in rows[-1].fix and "convert-official" in rows[0].fix
    assert doctor.exit_code(rows) == 3
    assert doctor.exit_code([doctor.Check("packages", "x", "fail")] + rows) == 1


def test_renderer_probe_never_imports_pyrender():
    """In a fresh interpreter (where nothing imported pyrender before), the probe reports the renderer
    rows without importing pyrender or OpenGL."""
    import subprocess
    import sys

    code = ("import sys; from dpmesh_infer import doctor; names = {c.name for c in doctor._renderers()}; "
            "print(sorted(names)); print([m for m in sys.modules if m == 'pyrender' or m.startswith('OpenGL')])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names, imported = r.stdout.strip().splitlines()
    assert {"pyrender", "EGL (GPU headless)", "OSMesa (CPU headless)"} <= set(eval(names))
    assert imported == "[]"


def test_detector_stack_failure_is_reported(monkeypatch):
    monkeypatch.undo()  # the real _detector_stack, with a failing import
    from dpmesh_infer.detect import mmpose_compat
    from dpmesh_infer.detect.mmpose_compat import DetectorStackError

    def boom():
        raise DetectorStackError("the keypoint detector needs the OpenMMLab stack; not installed: mmpose.")

    monkeypatch.setattr(mmpose_compat, "import_mmpose", boom)
    (row,) = doctor._detector_stack()
    assert row.status == "warn" and "not installed: mmpose" in row.detail and row.fix == "bash install.sh"
