"""Camera options of `dpmesh predict`: --focal PIXELS, --focal exif, --fov DEGREES (per image)."""

import json
import math

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.cli import app
from dpmesh_infer.errors import InputError
from dpmesh_infer.focal import FocalChoice, exif_focal_35mm, parse_focal_options

runner = CliRunner()
W, H = 640, 480
DIAG = math.hypot(W, H)


def _save(path, image, f35=None, orientation=None):
    exif = Image.Exif()
    if f35 is not None:
        exif.get_ifd(0x8769)[0xA405] = f35  # FocalLengthIn35mmFilm, in the Exif sub-IFD as cameras write it
    if orientation is not None:
        exif[0x0112] = orientation
    Image.fromarray(image).save(path, quality=95, exif=exif)
    return path


@pytest.fixture()
def photos(tmp_path, scene):
    image, kp = scene
    (tmp_path / "in").mkdir()
    with_exif = _save(tmp_path / "in" / "tele.jpg", image, f35=85)
    plain = _save(tmp_path / "in" / "plain.jpg", image)
    entries = [{"file_name": name, "keypoints": k.reshape(-1).tolist(), "score": 0.9}
               for name in ("tele.jpg", "plain.jpg") for k in kp]
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps(entries))
    return with_exif, plain, kp_file


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_parse_focal_options():
    assert parse_focal_options(None, None) == FocalChoice()
    assert parse_focal_options("1200", None) == FocalChoice("pixels", 1200.0)
    assert parse_focal_options("EXIF", None) == FocalChoice("exif")
    assert parse_focal_options(None, 60) == FocalChoice("fov", 60.0)
    with pytest.raises(InputError, match="mutually exclusive"):
        parse_focal_options("1000", 60)
    for bad in ("abc", "-5", "0", "nan"):
        with pytest.raises(InputError, match="--focal"):
            parse_focal_options(bad, None)
    for bad in (0, 180, -10):
        with pytest.raises(InputError, match="--fov"):
            parse_focal_options(None, bad)


def test_focal_formulas(tmp_path, scene):
    f, src = FocalChoice("fov", 90).for_image(None, W, H)
    assert f == pytest.approx(W / 2) and "--fov 90" in src
    f, _ = FocalChoice("fov", 60).for_image(None, W, H)
    assert f == pytest.approx(320 / math.tan(math.radians(30)))
    tele = _save(tmp_path / "t.jpg", scene[0], f35=85)
    assert exif_focal_35mm(tele) == 85
    f, src = FocalChoice("exif").for_path(tele)
    assert f == pytest.approx(85 / math.hypot(36, 24) * DIAG) and "85 mm" in src
    # a 43.27 mm equivalent (the full-frame diagonal) is exactly the default focal
    f, _ = FocalChoice("exif").for_path(_save(tmp_path / "n.jpg", scene[0], f35=43))
    assert f == pytest.approx(43 / 43.2666 * DIAG, rel=1e-4)
    plain = _save(tmp_path / "p.jpg", scene[0])
    assert exif_focal_35mm(plain) is None
    f, src = FocalChoice("exif").for_path(plain)
    assert f is None and "absent" in src
    # --fov uses the width after the EXIF orientation (90 degree rotation swaps W and H)
    rot = _save(tmp_path / "r.jpg", scene[0], orientation=6)
    f, _ = FocalChoice("fov", 90).for_path(rot)
    assert f == pytest.approx(H / 2)


def test_single_file_exif_and_fallback(photos, tiny_weights, tmp_path):
    tele, plain, kp = photos
    r = run("predict", tele, "-k", kp, "-w", tiny_weights, "--focal", "exif", "-o", tmp_path / "t.obj")
    assert r.exit_code == 0, r.output
    params = json.loads((tmp_path / "t.json").read_text())
    assert params["K"][0][0] == pytest.approx(85 / math.hypot(36, 24) * DIAG, rel=1e-5)
    assert "FocalLengthIn35mmFilm 85" in params["focal_source"]
    r = run("predict", plain, "-k", kp, "-w", tiny_weights, "--focal", "exif", "-o", tmp_path / "p.json")
    assert r.exit_code == 0, r.output
    params = json.loads((tmp_path / "p.json").read_text())
    assert params["K"][0][0] == pytest.approx(DIAG, rel=1e-5) and "absent" in params["focal_source"]


def test_single_file_fov_and_pixels(photos, tiny_weights, tmp_path):
    _, plain, kp = photos
    r = run("predict", plain, "-k", kp, "-w", tiny_weights, "--fov", "90", "-o", tmp_path / "a.npz")
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "a.npz") as z:
        assert z["K"][0, 0] == pytest.approx(W / 2) and z["K"][1, 1] == pytest.approx(W / 2)
    r = run("predict", plain, "-k", kp, "-w", tiny_weights, "--focal", "1234", "-o", tmp_path / "b.json")
    assert r.exit_code == 0, r.output
    params = json.loads((tmp_path / "b.json").read_text())
    assert params["K"][0][0] == pytest.approx(1234) and params["focal_source"] == "--focal 1234 px"


def test_folder_run_per_image_exif(photos, tiny_weights, tmp_path):
    tele, _, kp = photos
    out = tmp_path / "out"
    r = run("predict", tele.parent, "-k", kp, "-w", tiny_weights, "--focal", "exif", "-o", out, "-q")
    assert r.exit_code == 0, r.output
    k_tele = json.loads((out / "tele" / "people.json").read_text())["K"]
    k_plain = json.loads((out / "plain" / "people.json").read_text())["K"]
    assert k_tele[0][0] == pytest.approx(85 / math.hypot(36, 24) * DIAG, rel=1e-5)
    assert k_plain[0][0] == pytest.approx(DIAG, rel=1e-5)
    rows = {json.loads(line)["image"]: json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert "85 mm" in rows["tele.jpg"]["focal_source"] and "absent" in rows["plain.jpg"]["focal_source"]


def test_usage_errors(photos, tiny_weights, tmp_path):
    _, plain, kp = photos
    r = run("predict", plain, "-k", kp, "-w", tiny_weights, "--focal", "900", "--fov", "60", "-o", tmp_path / "x.npz")
    assert r.exit_code == 2 and "mutually exclusive" in r.output and "Traceback" not in r.output
    r = run("predict", plain, "-k", kp, "-w", tiny_weights, "--focal", "wide", "-o", tmp_path / "x.npz")
    assert r.exit_code == 2 and "'exif'" in r.output
