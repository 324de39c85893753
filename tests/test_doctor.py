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
    assert "pipeline.json" in r.output or "config" in r.output
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


def test_weights_rows_match_missing_weight_files(tiny_weights, tmp_path):
    from dpmesh_infer.pipeline import missing_weight_files

    (tmp_path / "w").mkdir()
    rows = [c for c in doctor.collect(tmp_path / "w", detector_stack=False) if c.status == "missing"]
    assert sorted(c.name for c in rows) == sorted(missing_weight_files(tmp_path / "w"))
    assert doctor.exit_code(rows) == 3
    assert doctor.exit_code([doctor.Check("packages", "x", "fail")] + rows) == 1


def test_renderer_probe_never_imports_pyrender():
    import sys

    checks = doctor._renderers()
    assert "pyrender" not in sys.modules or sys.modules["pyrender"] is not None  # unchanged by the probe
    assert {c.name for c in checks} >= {"pyrender", "EGL (GPU headless)", "OSMesa (CPU headless)"}


def test_detector_stack_failure_is_reported(monkeypatch):
    monkeypatch.undo()  # the real _detector_stack, with a failing import
    from dpmesh_infer.detect import mmpose_compat
    from dpmesh_infer.detect.mmpose_compat import DetectorStackError

    def boom():
        raise DetectorStackError("the keypoint detector needs the OpenMMLab stack; not installed: mmpose.")

    monkeypatch.setattr(mmpose_compat, "import_mmpose", boom)
    (row,) = doctor._detector_stack()
    assert row.status == "warn" and "not installed: mmpose" in row.detail and row.fix == "bash install.sh"
