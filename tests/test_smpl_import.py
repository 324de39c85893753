"""SMPL import: restricted unpickling of official-style files, validation, clean npz, error messages."""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from dpmesh_infer.errors import WeightsError
from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays, write_synthetic_smpl_pkl
from dpmesh_infer.weights import smpl as ws


@pytest.fixture(scope="module")
def synthetic():
    return make_synthetic_smpl_arrays(0)


@pytest.fixture(scope="module")
def chumpy_pkl(tmp_path_factory):
    return write_synthetic_smpl_pkl(tmp_path_factory.mktemp("src") / "SMPL_NEUTRAL.pkl", with_chumpy=True)


def _check_clean(path, synthetic):
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    assert all(v.dtype != object for v in data.values())
    for k in ("v_template", "posedirs", "J_regressor", "weights"):
        assert data[k].dtype == np.float32
        np.testing.assert_array_equal(data[k], synthetic[k].astype(np.float32))
    np.testing.assert_array_equal(data["shapedirs"], synthetic["shapedirs"][:, :, :10].astype(np.float32))
    assert data["kintree_table"].dtype == np.int64 and data["kintree_table"][0, 0] == -1
    np.testing.assert_array_equal(data["kintree_table"][0, 1:], synthetic["kintree_table"][0, 1:])
    assert data["f"].dtype == np.int64
    np.testing.assert_array_equal(data["f"], synthetic["f"].astype(np.int64))
    assert int(data["format_version"]) == 1
    return data


def test_chumpy_pkl_references_chumpy_and_chumpy_is_not_installed(chumpy_pkl):
    raw = chumpy_pkl.read_bytes()
    assert b"chumpy.ch" in raw and b"Ch" in raw
    assert b"scipy.sparse" in raw
    assert importlib.util.find_spec("chumpy") is None
    assert not any(k == "chumpy" or k.startswith("chumpy.") for k in sys.modules)
    with pytest.raises(ModuleNotFoundError):  # a plain unpickle would need chumpy
        pickle.loads(raw, encoding="latin1")


@pytest.mark.parametrize("protocol", [0, 2])
def test_import_official_style_pkl_without_chumpy(tmp_path, synthetic, protocol):
    src = write_synthetic_smpl_pkl(tmp_path / "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl", protocol=protocol)
    out = ws.import_smpl(src, tmp_path / "weights")
    assert out == tmp_path / "weights" / "smpl" / "SMPL_NEUTRAL.npz"
    data = _check_clean(out, synthetic)
    assert str(data["source_name"]) == src.name
    assert not any(k == "chumpy" or k.startswith("chumpy.") for k in sys.modules)
    assert sorted(p.name for p in out.parent.iterdir()) == ["SMPL_NEUTRAL.npz"]  # no temp files left


def test_import_plain_pkl_and_npz(tmp_path, synthetic):
    src = write_synthetic_smpl_pkl(tmp_path / "SMPL_NEUTRAL.pkl", with_chumpy=False, protocol=5)
    _check_clean(ws.import_smpl(src, tmp_path / "w1"), synthetic)
    npz = tmp_path / "converted.npz"
    np.savez(npz, **synthetic)
    _check_clean(ws.import_smpl(npz, tmp_path / "w2"), synthetic)
    # a folder holding a well-known name works too
    _check_clean(ws.import_smpl(tmp_path, tmp_path / "w3"), synthetic)


def test_import_keeps_first_10_betas(tmp_path, synthetic):
    arrays = dict(synthetic)
    arrays["shapedirs"] = np.concatenate([synthetic["shapedirs"]] * 30, axis=2)  # 300 like SMPL 1.1.0
    np.savez(tmp_path / "smpl300.npz", **arrays)
    out = ws.import_smpl(tmp_path / "smpl300.npz", tmp_path / "w")
    with np.load(out, allow_pickle=False) as z:
        assert z["shapedirs"].shape == (6890, 3, 10)


def test_npz_with_objects_is_refused(tmp_path, synthetic):
    arrays = dict(synthetic)
    arrays["evil"] = np.array([{"a": 1}], dtype=object)
    np.savez(tmp_path / "objects.npz", **arrays)
    with pytest.raises(WeightsError, match="Python objects"):
        ws.import_smpl(tmp_path / "objects.npz", tmp_path / "w")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getpid()",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_disallowed_global_is_refused_and_nothing_runs(tmp_path, synthetic, protocol):
    marker = tmp_path / "pwned"
    data = {"v_template": synthetic["v_template"], "bs_style": _Evil(marker), "f": synthetic["f"]}
    src = tmp_path / "SMPL_NEUTRAL.pkl"
    src.write_bytes(pickle.dumps(data, protocol=protocol))
    with pytest.raises(WeightsError) as ei:
        ws.import_smpl(src, tmp_path / "w")
    msg = str(ei.value)
    assert "system" in msg and "not allowed" in msg and str(src) in msg
    assert not marker.exists()
    assert not (tmp_path / "w" / "smpl" / "SMPL_NEUTRAL.npz").exists()

    src.write_bytes(pickle.dumps({"x": _EvalEvil()}, protocol=protocol))
    with pytest.raises(WeightsError, match="eval"):
        ws.read_smpl_source(src)


def test_chumpy_expression_is_refused(tmp_path, synthetic):
    # A chumpy object without a stored value (a lazy expression) cannot be evaluated safely.
    mod = types.ModuleType("chumpy.ch_ops")

    class add:  # noqa: N801 - mimics chumpy's class name
        def __getstate__(self):
            return {"a": np.ones(3), "b": np.ones(3), "_dirty_vars": set()}

    add.__module__, add.__qualname__ = "chumpy.ch_ops", "add"
    mod.add = add
    pkg = types.ModuleType("chumpy")
    sys.modules["chumpy"], sys.modules["chumpy.ch_ops"] = pkg, mod
    try:
        data = dict(synthetic)
        data["shapedirs"] = add()
        blob = pickle.dumps(data, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch_ops"]
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(blob)
    with pytest.raises(WeightsError, match=r"'shapedirs' is a chumpy expression \(chumpy.ch_ops.add\)"):
        ws.read_smpl_source(tmp_path / "SMPL_NEUTRAL.pkl")


def _smplx_like():
    # the identifying shapes are real; the bulky bases are shrunk (only their shapes are reported)
    return {
        "v_template": np.zeros((10475, 3)),
        "shapedirs": np.zeros((10475, 3, 1)),
        "posedirs": np.zeros((10, 3, 486)),
        "J_regressor": np.zeros((55, 10475)),
        "weights": np.zeros((10475, 55)),
        "kintree_table": np.zeros((2, 55), dtype=np.int64),
        "f": np.zeros((20908, 3), dtype=np.int64),
    }


def _smplh_like(synthetic):
    d = dict(synthetic)
    d.update(
        posedirs=np.zeros((6890, 3, 1)),
        J_regressor=np.zeros((52, 6890)),
        weights=np.zeros((6890, 52)),
        kintree_table=np.zeros((2, 52), dtype=np.int64),
    )
    return d


@pytest.mark.parametrize(
    "make, found",
    [
        (lambda s: _smplx_like(), "SMPL-X"),
        (_smplh_like, "SMPL-H"),
        (lambda s: {"v_template": np.zeros((778, 3)), "hands_components": np.zeros((45, 45))}, "MANO"),
    ],
)
def test_wrong_model_message(tmp_path, synthetic, make, found):
    src = tmp_path / "model.pkl"
    src.write_bytes(pickle.dumps(make(synthetic), protocol=2))
    with pytest.raises(WeightsError) as ei:
        ws.import_smpl(src, tmp_path / "w")
    msg = str(ei.value)
    assert found in msg and "SMPL" in msg


def test_wrong_shape_message_lists_found_and_expected(tmp_path, synthetic):
    bad = dict(synthetic)
    bad["posedirs"] = np.zeros((6890, 3, 200))
    with pytest.raises(WeightsError) as ei:
        ws.validate_smpl_arrays(bad, where="x.pkl")
    assert "posedirs (6890, 3, 200) (expected (6890, 3, 207))" in str(ei.value)

    bad = dict(synthetic)
    bad["kintree_table"] = synthetic["kintree_table"][:, ::-1].copy()
    with pytest.raises(WeightsError, match="kinematic tree"):
        ws.validate_smpl_arrays(bad, where="x.pkl")

    bad = dict(synthetic)
    del bad["weights"]
    with pytest.raises(WeightsError, match=r"missing entries \['weights'\]"):
        ws.validate_smpl_arrays(bad, where="x.pkl")


def test_not_a_pickle_and_unsupported_suffix(tmp_path):
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle")
    with pytest.raises(WeightsError, match="junk.pkl"):
        ws.import_smpl(tmp_path / "junk.pkl", tmp_path / "w")
    (tmp_path / "SMPL_python_v.1.1.0.zip").write_bytes(b"PK")
    with pytest.raises(WeightsError, match="unzip"):
        ws.import_smpl(tmp_path / "SMPL_python_v.1.1.0.zip", tmp_path / "w")
    with pytest.raises(WeightsError, match="not found"):
        ws.import_smpl(tmp_path / "nope.pkl", tmp_path / "w")


@pytest.mark.parametrize(
    "name, gender",
    [
        ("basicModel_f_lbs_10_207_0_v1.0.0.pkl", "female"),
        ("SMPL_MALE.pkl", "male"),
        ("SMPL_NEUTRAL.pkl", None),
    ],
)
def test_gender_warning_from_name(tmp_path, caplog, chumpy_pkl, name, gender):
    src = tmp_path / name
    src.symlink_to(chumpy_pkl)
    with caplog.at_level(logging.WARNING, logger="dpmesh_infer.weights.smpl"):
        ws.import_smpl(src, tmp_path / "w")
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if gender is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and gender in warnings[0] and "NEUTRAL" in warnings[0]


def test_missing_file_message(tmp_path):
    with pytest.raises(WeightsError) as ei:
        ws.load_smpl_arrays(tmp_path)
    msg = str(ei.value)
    assert str(tmp_path / "smpl" / "SMPL_NEUTRAL.npz") in msg
    assert f"dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights {tmp_path}" in msg
    assert "https://smpl.is.tue.mpg.de" in msg
    assert "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl" in msg and "SMPL_NEUTRAL.pkl" in msg


def test_load_accepts_weights_dir_smpl_dir_and_file(tmp_path, chumpy_pkl, synthetic):
    out = ws.import_smpl(chumpy_pkl, tmp_path)
    for where in (tmp_path, tmp_path / "smpl", out):
        arrays = ws.load_smpl_arrays(where)
        assert set(arrays) == set(ws.SMPL_ARRAY_KEYS)
        np.testing.assert_array_equal(arrays["v_template"], synthetic["v_template"].astype(np.float32))
    assert ws.load_extra_regressor(tmp_path) is None


def test_extra_regressor_copied_and_validated(tmp_path, chumpy_pkl):
    extra = np.random.default_rng(0).random((9, 6890))
    np.save(tmp_path / "J_regressor_extra.npy", extra)
    ws.import_smpl(chumpy_pkl, tmp_path / "w", extra_regressor=tmp_path / "J_regressor_extra.npy")
    np.testing.assert_array_equal(ws.load_extra_regressor(tmp_path / "w"), extra.astype(np.float32))

    np.save(tmp_path / "bad.npy", np.zeros((3, 6890)))
    with pytest.raises(WeightsError, match=r"row 3 = head top"):
        ws.import_smpl(chumpy_pkl, tmp_path / "w2", extra_regressor=tmp_path / "bad.npy")
    assert not (tmp_path / "w2" / "smpl" / "SMPL_NEUTRAL.npz").exists()


def test_smplx_accepts_official_root_parent(synthetic):
    """smplx casts kintree row 0 through float32 and then sets parents[0] = -1: 4294967295 is fine."""
    import smplx
    from smplx.utils import Struct

    assert synthetic["kintree_table"][0, 0] == 4294967295
    model = smplx.SMPL("", data_struct=Struct(**synthetic), create_transl=False)
    assert model.parents[0].item() == -1
    np.testing.assert_array_equal(model.parents[1:].numpy(), synthetic["kintree_table"][0, 1:])
    out = model(betas=torch.zeros(1, 10), body_pose=torch.zeros(1, 69), global_orient=torch.zeros(1, 3))
    assert torch.isfinite(out.vertices).all()
