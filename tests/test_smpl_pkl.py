"""`dpmesh weights import-smpl --pkl`: a chumpy-free SMPL_NEUTRAL.pkl that smplx and plain pickle load,
reproducing our SMPL vertices (the synthetic stand-in model in the official .pkl layout)."""

from __future__ import annotations

import importlib.util
import io
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dpmesh_infer.cli import app
from dpmesh_infer.errors import OutputConflictError
from dpmesh_infer.stand_ins.smpl import write_synthetic_smpl_pkl
from dpmesh_infer.weights import smpl as ws
from dpmesh_infer.weights.layout import SMPL_PKL_FILE, smpl_file, smpl_pkl_file


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A weights dir with the synthetic SMPL imported from an official-style (chumpy) .pkl, with --pkl."""
    root = tmp_path_factory.mktemp("w")
    src = write_synthetic_smpl_pkl(root / "src" / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl", with_chumpy=True)
    weights = root / "weights"
    ws.import_smpl(src, weights, pkl=True)
    return weights


def _globals(data: bytes) -> set[str]:
    out = io.StringIO()
    pickletools.dis(data, out=out)
    return {line.split("GLOBAL", 1)[1].strip().strip("'") for line in out.getvalue().splitlines() if "GLOBAL" in line}


def test_pkl_is_plain_numpy_and_scipy(imported):
    path = smpl_pkl_file(imported)
    assert path.name == SMPL_PKL_FILE and path.parent == smpl_file(imported).parent
    names = _globals(path.read_bytes())
    assert not any("chumpy" in n for n in names)
    assert names <= {"_codecs encode", "numpy dtype", "numpy ndarray", "numpy._core.multiarray _reconstruct",
                     "numpy.core.multiarray _reconstruct", "scipy.sparse._csc csc_matrix"}, names
    # a plain unpickle in a fresh interpreter where chumpy cannot be imported
    code = ("import pickle, sys; sys.modules['chumpy'] = None\n"
            f"d = pickle.load(open({str(path)!r}, 'rb'), encoding='latin1')\n"
            "print(sorted(d), d['J_regressor'].shape, type(d['J_regressor']).__module__, d['f'].dtype)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "'J_regressor'" in r.stdout and "(24, 6890) scipy.sparse" in r.stdout and "uint32" in r.stdout
    assert importlib.util.find_spec("chumpy") is None


def test_smplx_loads_the_pkl_and_reproduces_our_vertices(imported):
    """smplx.SMPL(model_path=<the .pkl>) and smplx.create(DIR, model_type='smpl', gender='neutral')."""
    import smplx

    ours = ws.load_smpl(imported)
    g = torch.Generator().manual_seed(0)
    b = 4
    go, pose = torch.randn(b, 3, generator=g) * 0.6, torch.randn(b, 69, generator=g) * 0.4
    betas, transl = torch.randn(b, 10, generator=g), torch.randn(b, 3, generator=g)
    want = ours(go, pose, betas, transl).vertices
    for model in (smplx.SMPL(model_path=str(smpl_pkl_file(imported))),
                  smplx.create(str(imported), model_type="smpl", gender="neutral")):
        got = model(global_orient=go, body_pose=pose, betas=betas, transl=transl).vertices
        err = float((got - want).abs().max())
        assert err < 1e-5, err
        np.testing.assert_array_equal(model.faces, ours.faces)


def test_our_importer_reads_the_pkl_back(imported, tmp_path):
    back = ws.read_smpl_source(smpl_pkl_file(imported))
    for k, v in ws.load_smpl_arrays(imported).items():
        np.testing.assert_array_equal(back[k], v)
    with open(smpl_pkl_file(imported), "rb") as f:
        d = pickle.load(f, encoding="latin1")
    np.testing.assert_allclose(d["J"], d["J_regressor"] @ d["v_template"])
    assert d["kintree_table"][0, 0] == 4294967295 and (d["bs_style"], d["bs_type"]) == ("lbs", "lrotmin")
    # the .pkl it writes is never its own source
    with pytest.raises(OutputConflictError, match="is the file --pkl would write"):
        ws.import_smpl(smpl_pkl_file(imported), imported, pkl=True)


def test_cli_import_smpl_pkl(tmp_path):
    src = write_synthetic_smpl_pkl(tmp_path / "SMPL_NEUTRAL.pkl", with_chumpy=True)
    r = CliRunner().invoke(app, ["weights", "import-smpl", str(src), "--weights", str(tmp_path / "w"), "--pkl"])
    assert r.exit_code == 0, r.output
    assert smpl_pkl_file(tmp_path / "w").is_file() and "smplx.SMPL(model_path=" in r.output
    r = CliRunner().invoke(app, ["weights", "import-smpl", str(src), "--weights", str(tmp_path / "v")])
    assert r.exit_code == 0 and not smpl_pkl_file(tmp_path / "v").exists()
