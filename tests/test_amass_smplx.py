"""AMASS SMPL-X files (165 pose columns, surface_model_type "smplx"; AMASS's SMPL-X N release) are refused
without --zero-hands by `dpmesh data convert amass` and by the VQ-VAE loader: their columns 66:72 are the
jaw and left eye, not SMPL's hand joints 22/23."""

import numpy as np
import pytest
from typer.testing import CliRunner

from dpmesh_infer.cli import app
from dpmesh_infer.data.converters import convert_amass
from dpmesh_infer.errors import DatasetError, InputError
from dpmesh_infer.train.vqvae import load_amass_body_poses


@pytest.fixture
def smplx_dir(tmp_path):
    rng = np.random.default_rng(5)
    src = tmp_path / "amass"
    (src / "ACCAD").mkdir(parents=True)
    smplh = rng.normal(0, 0.5, (40, 156))  # an SMPL+H file first: nothing may be written before the refusal
    np.savez(src / "ACCAD" / "a_poses.npz", poses=smplh, mocap_framerate=np.array(120.0))
    smplx = rng.normal(0, 0.5, (60, 165))
    np.savez(src / "ACCAD" / "b_stageii.npz", poses=smplx, mocap_frame_rate=np.array(120.0),
             surface_model_type=np.array("smplx"), gender=np.array("neutral"))
    return src, smplx


def test_convert_refuses_smplx_without_zero_hands(smplx_dir, tmp_path):
    src, smplx = smplx_dir
    out = tmp_path / "poses"
    r = CliRunner().invoke(app, ["data", "convert", "amass", str(src), "--out", str(out)])
    assert r.exit_code == 2
    text = " ".join(r.output.split())
    assert "b_stageii.npz: SMPL-X poses (165 columns)" in text and "jaw and left-eye" in text
    assert "pass --zero-hands" in text
    assert not out.exists()  # refused before anything was written
    res = convert_amass(src, out, zero_hands=True)
    assert res.files == 2
    with np.load(out / "ACCAD" / "b_stageii.npz", allow_pickle=False) as d:
        np.testing.assert_allclose(d["poses"][:, :66], smplx[::4, :66].astype(np.float32))
        assert np.all(d["poses"][:, 66:] == 0)


def test_model_type_alone_is_enough(tmp_path):
    src = tmp_path / "a"
    src.mkdir()
    np.savez(src / "x.npz", poses=np.zeros((3, 72)), surface_model_type=np.array("smplx"))
    with pytest.raises(DatasetError, match="SMPL-X poses"):
        convert_amass(src, tmp_path / "o")


def test_vqvae_loader_refuses_raw_smplx(smplx_dir):
    src, smplx = smplx_dir
    with pytest.raises(InputError, match=r"b_stageii.npz: SMPL-X poses .*pass --zero-hands \(zero_hands=True\)"):
        load_amass_body_poses(src)
    body = load_amass_body_poses(src, zero_hands=True).numpy()
    np.testing.assert_allclose(body[40:, :21], smplx[:, 3:66].reshape(-1, 21, 3).astype(np.float32))
    assert np.all(body[:, 21:] == 0)
