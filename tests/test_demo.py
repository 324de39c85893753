"""dpmesh demo: the run function (outputs and every error message), the page's plain parts, the CLI, and
the served app through gradio_client and a real headless Chromium (Selenium).

One server (``dpmesh demo`` in a subprocess on 127.0.0.1) is shared by the client and browser tests
(module-scoped fixture; the xdist group keeps them on one worker).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dpmesh_infer.demo.run import DemoOptions, demo_options, run_demo
from dpmesh_infer.demo.service import DemoService

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    from dpmesh_infer.demo.examples import write_examples

    return write_examples(tmp_path_factory.mktemp("demo_examples"), scale=0.5)  # 320x240, 400x300: fast renders


@pytest.fixture(scope="module")
def service(tiny_weights, tmp_path_factory):
    with DemoService(tiny_weights, device="cpu", work_dir=tmp_path_factory.mktemp("demo_work")) as svc:
        assert svc.status.ready, svc.status.message
        yield svc


def _kp_options(examples, **kw) -> DemoOptions:
    return DemoOptions(keypoint_file=examples.keypoints, **kw)


def _errors(result) -> str:
    return "\n".join(result.errors)


# ------------------------------------------------------------------------------------------ run function

def test_run_writes_pictures_scene_table_and_zip(service, examples):
    import trimesh

    from dpmesh_infer.keypoint_files import read_keypoints

    seen = []
    result = run_demo(service, list(examples.photos), _kp_options(examples), progress=lambda f, t: seen.append(f))
    assert not result.errors, result.errors
    assert result.messages[0].level == "warning" and "Untrained" in result.messages[0].text
    assert "4 people reconstructed in 2 of 2 photos" in result.messages[-1].text
    assert seen == sorted(seen) and seen[-1] == 1.0  # progress goes forward to the end

    for im, path in zip(result.images, examples.photos):
        photo = np.asarray(Image.open(path).convert("RGB"))
        for picture in (im.keypoints_png, im.overlay, im.side):
            assert picture.is_file() and np.asarray(Image.open(picture)).shape == photo.shape
        assert not np.array_equal(np.asarray(Image.open(im.overlay)), photo)  # meshes were drawn
        # the 3D scene holds exactly the reconstructed people (glTF frame: OpenCV y and z negated)
        with np.load(im.folder / "params.npz", allow_pickle=False) as z:
            vertices = z["vertices"]
        scene = trimesh.load(im.glb, process=False)
        geoms = [scene.geometry[name] for name in sorted(scene.geometry)]
        assert len(geoms) == 2
        for g, v in zip(geoms, vertices):
            np.testing.assert_allclose(np.asarray(g.vertices) * [1, -1, -1], v, atol=1e-5)
        people = json.loads((im.folder / "people.json").read_text())
        assert people["source"] == path.name and len(people["persons"]) == 2  # no server path

    # the demo runs the real pipeline: same numbers as calling it directly
    rgb = np.asarray(Image.open(examples.photos[0]).convert("RGB"))
    direct = service.pipe(rgb, keypoints=read_keypoints(examples.keypoints).lookup("street.jpg"))
    with np.load(result.images[0].folder / "params.npz", allow_pickle=False) as z:
        np.testing.assert_allclose(z["vertices"], direct[0].stacked()["vertices"], atol=1e-5)

    rows = [r.cells() for r in result.rows]
    assert [r[:3] for r in rows] == [["street.jpg", "0", "reconstructed"], ["street.jpg", "1", "reconstructed"],
                                     ["plaza.png", "0", "reconstructed"], ["plaza.png", "1", "reconstructed"]]
    assert all(r[3] == "0.90" and r[4] == "17/17" and float(r[6]) > 0 for r in rows)

    with zipfile.ZipFile(result.bundle) as z:
        names = set(z.namelist())
        for stem in ("street", "plaza"):
            for f in ("people.json", "params.npz", "person_00.obj", "person_01.obj", "scene.glb", "overlay.png",
                      "side.png", "keypoints.png"):
                assert f"dpmesh-results/{stem}/{f}" in names
        manifest = [json.loads(line) for line in z.read("dpmesh-results/manifest.jsonl").decode().splitlines()]
        assert [(m["image"], m["output"], m["status"], m["persons"]) for m in manifest] == [
            ("street.jpg", "street", "done", 2), ("plaza.png", "plaza", "done", 2)]
        kp_used = result.run_dir / "kp_used.json"
        kp_used.write_bytes(z.read("dpmesh-results/keypoints.json"))
    back = read_keypoints(kp_used).lookup("plaza.png")
    given = read_keypoints(examples.keypoints).lookup("plaza.png")
    assert len(back) == 2 and np.allclose(back[1].keypoints, given[1].keypoints)


def test_two_photos_with_one_stem_get_two_folders(service, examples, tmp_path, monkeypatch):
    monkeypatch.setattr(service, "render", False)
    a, b = tmp_path / "a" / "street.jpg", tmp_path / "b" / "street.png"
    for p in (a, b):
        p.parent.mkdir()
        Image.open(examples.photos[0]).save(p)
    kp = tmp_path / "kp.json"  # a single-image file (no file names) answers for every photo
    entries = [e for e in json.loads(examples.keypoints.read_text()) if e["file_name"] == "street.jpg"]
    kp.write_text(json.dumps([{k: v for k, v in e.items() if k != "file_name"} for e in entries]))
    result = run_demo(service, [a, b], DemoOptions(keypoint_file=kp))
    assert not result.errors and [im.folder.name for im in result.images] == ["street", "street-2"]


def test_every_error_is_a_message(service, examples, tmp_path, monkeypatch):
    from dpmesh_infer.demo.app import handle_run

    monkeypatch.setattr(service, "render", False)
    good = examples.photos[0]
    r = run_demo(service, [], _kp_options(examples))
    assert "No photo" in _errors(r) and r.bundle is None

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    r = run_demo(service, [broken], _kp_options(examples))
    assert _errors(r).startswith("broken.jpg: cannot read image") and r.bundle is None
    assert str(tmp_path) not in _errors(r)  # the server's upload folder is not shown

    r = run_demo(service, [broken, good], _kp_options(examples))  # one bad photo, the other still works
    assert "broken.jpg" in _errors(r) and r.persons == 2 and r.bundle is not None
    with zipfile.ZipFile(r.bundle) as z:
        status = [json.loads(x)["status"] for x in z.read("dpmesh-results/manifest.jsonl").decode().splitlines()]
    assert status == ["failed", "done"]

    monkeypatch.setattr(service, "max_pixels", 50_000)  # the CLI's --max-pixels limit (the photo has 76 800)
    r = run_demo(service, [good], _kp_options(examples))
    assert "street.jpg: 320x240 = 76800 pixels exceeds the limit of 50000 pixels" in _errors(r)
    monkeypatch.setattr(service, "max_pixels", None)
    monkeypatch.setattr(service, "max_images", 1)
    r = run_demo(service, list(examples.photos), _kp_options(examples))
    assert "at most 1 per run" in _errors(r)
    monkeypatch.setattr(service, "max_images", 8)

    bad_kp = tmp_path / "kp.json"
    bad_kp.write_text("[{not json")
    r = run_demo(service, [good], DemoOptions(keypoint_file=bad_kp))
    assert _errors(r).startswith("Keypoint file: kp.json: not valid JSON")
    bad_kp.write_text('[{"keypoints": [1, 2, 3]}]')
    r = run_demo(service, [good], DemoOptions(keypoint_file=bad_kp))
    assert "'keypoints' has 3 numbers, expected 51" in _errors(r)

    other = tmp_path / "other.jpg"
    shutil.copy(good, other)
    r = run_demo(service, [other], _kp_options(examples))
    assert "has no keypoints for other.jpg" in _errors(r)

    empty = tmp_path / "zeros.json"
    empty.write_text(json.dumps([{"keypoints": [0.0] * 51, "score": 0.5}] * 2))
    r = run_demo(service, [good], DemoOptions(keypoint_file=empty))
    # all-zero keypoints: people with no labelled keypoint are skipped, not rebuilt from their box (issue 11)
    assert "no person could be reconstructed (person 0: no labelled keypoint" in _errors(r)
    assert r.bundle is None and r.images[0].keypoints_png.is_file()  # the keypoint picture still shows
    assert [x.cells()[2] for x in r.rows] == ["skipped", "skipped"] and "confidence" in r.rows[0].note

    args = (service, [good], examples.keypoints, "rtmo-l", 0.3, 0.3, 0)
    assert "--fov must be" in _errors(handle_run(*args, "fov", 200))
    assert "needs a value" in _errors(handle_run(*args, "pixels", 0))
    ok = handle_run(*args, "fov", 60)
    assert not ok.errors and "--fov 60 deg" in json.loads((ok.images[0].folder / "people.json").read_text())[
        "focal_source"]

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(type(service.pipe), "__call__", boom)
    r = handle_run(*args, "default", 0)
    assert "internal error (RuntimeError: boom); see the server log" in _errors(r)
    assert "Traceback" not in _errors(r)


def test_without_keypoint_file_the_detector_problem_is_a_message(service, examples, monkeypatch):
    monkeypatch.setattr(service, "render", False)
    # no detector checkpoint can be downloaded here (DPMESH_NO_DOWNLOAD), or the mmpose stack is absent
    r = run_demo(service, [examples.photos[0]], DemoOptions(detector="rtmo-s"))
    text = _errors(r)
    assert "keypoint detector cannot run" in text and "Upload a keypoint file" in text, text
    assert "dpmesh weights fetch --detector rtmo-s" in text or "mmpose" in text.lower()
    assert r.bundle is None


def test_detector_path_with_a_random_rtmo(tiny_weights, examples, tmp_path):
    pytest.importorskip("mmpose")
    try:
        from dpmesh_infer.stand_ins.detector import write_random_rtmo_checkpoint

        _, ckpt, cfg = write_random_rtmo_checkpoint(tmp_path / "rtmo-s-random.pth")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"the OpenMMLab stack does not build RTMO here: {e}")
    with DemoService(tiny_weights, device="cpu", det_config=cfg, det_checkpoint=ckpt, render=False) as svc:
        assert svc.detector_names == ["custom"]
        r = run_demo(svc, [examples.photos[0]], DemoOptions(det_thr=0.0, kpt_thr=0.0, max_people=3))
        assert not [e for e in r.errors if "internal error" in e or "detector cannot run" in e], r.errors
        statuses = {row.status for row in r.rows}
        assert statuses <= {"reconstructed", "skipped", "dropped"}
        assert sum(row.status == "reconstructed" for row in r.rows) == r.persons <= 3
        if r.persons:  # random weights: people are wherever the random network puts them
            assert r.bundle is not None and r.images[0].overlay is None  # render=False
        det = svc._detectors["custom"]
        assert det.thresholds.max_people == 3 and det.thresholds.det_thr == 0.0


def test_missing_weights_say_what_and_how_to_fix(tmp_path, examples):
    from dpmesh_infer.demo.app import status_html

    empty = tmp_path / "empty"
    empty.mkdir()
    with DemoService(empty, device="cpu", work_dir=tmp_path / "w1") as svc:
        st = svc.status
        assert not st.ready and "pipeline.json" in st.missing and "smpl/SMPL_NEUTRAL.npz" in st.missing
        assert any(f.startswith("dpmesh weights convert-official") for f in st.fixes)
        assert any(f.startswith("dpmesh weights import-smpl") for f in st.fixes)
        r = run_demo(svc, [examples.photos[0]], _kp_options(examples))
        assert _errors(r).startswith(f"No usable weights: the weights directory {empty} (--weights) is incomplete: "
                                     "16 required files missing.\nFix with:\n    dpmesh weights convert-official")
        assert "dpmesh weights import-smpl" in _errors(r) and "dpmesh selftest --keep" in _errors(r)
        page = status_html(svc)
        assert "cannot run" in page and "dpmesh weights import-smpl" in page and "dpmesh selftest --keep" in page
        assert f"{empty}/regressor/model.safetensors" in page  # the full list, in a <details>
    with DemoService(tmp_path / "nowhere", device="cpu", work_dir=tmp_path / "w2") as svc:
        assert not svc.status.ready and "(given with --weights) does not exist" in svc.status.summary
        assert svc.status.fixes[0].startswith("dpmesh weights convert-official")
        assert "does not exist" in _errors(run_demo(svc, [examples.photos[0]], _kp_options(examples)))


def test_trained_weights_have_no_untrained_warning(tiny_weights, tmp_path, examples):
    from dpmesh_infer.demo.app import status_html

    w = tmp_path / "weights"
    shutil.copytree(tiny_weights, w)
    cfg = json.loads((w / "pipeline.json").read_text())
    cfg["untrained"] = False
    (w / "pipeline.json").write_text(json.dumps(cfg))
    with DemoService(w, device="cpu", work_dir=tmp_path / "work", render=False) as svc:
        assert svc.status.ready and not svc.status.untrained
        assert "UNTRAINED" not in status_html(svc) and "dpm-ready" in status_html(svc)
        r = run_demo(svc, [examples.photos[0]], _kp_options(examples))
        assert not r.errors and not any("ntrained" in m.text for m in r.messages)


def test_options_from_the_page():
    o = demo_options(None, "rtmo-m", 0.2, 0.4, 5, "pixels", 1200)
    assert (o.keypoint_file, o.detector, o.det_thr, o.kpt_thr, o.max_people) == (None, "rtmo-m", 0.2, 0.4, 5)
    assert (o.focal.mode, o.focal.value) == ("pixels", 1200.0)
    assert demo_options(max_people=0).max_people is None and demo_options(camera="exif").focal.mode == "exif"
    from dpmesh_infer.errors import InputError

    for bad in ({"camera": "tele"}, {"det_thr": 1.5}, {"camera": "fov", "camera_value": 180}, {"max_people": -1}):
        with pytest.raises(InputError):
            demo_options(**bad)


def test_output_folder_names_are_safe_and_unique():
    from dpmesh_infer.demo.run import _unique_rels

    names = ["a.jpg", "A.png", "manifest.jsonl.png", "ü ber/../x.jpg", ".hidden.jpg", "a.webp"]
    assert _unique_rels([Path(n) for n in names]) == ["a", "A-2", "manifest.jsonl-2", "x", "hidden", "a-3"]


def test_messages_are_escaped():
    from dpmesh_infer.demo.app import messages_html
    from dpmesh_infer.demo.run import Message

    page = messages_html([Message("error", "<script>x</script> `dpmesh demo`"), Message("info", "a\nb & c")])
    assert "<script>" not in page and "&lt;script&gt;" in page and "<code>dpmesh demo</code>" in page
    assert "<pre>a\nb &amp; c</pre>" in page and 'class="dpm-msg dpm-error"' in page


def test_keypoint_picture_draws_each_person_in_its_colour(scene):
    from dpmesh_infer.demo.draw import SKIPPED_RGB, DrawnPerson, draw_people
    from dpmesh_infer.geometry.joints import coco17_to_j30

    image, kp = scene
    kp30 = coco17_to_j30(kp)
    out = draw_people(image, [DrawnPerson(kp30[0], np.array([100, 50, 300, 300]), (255, 0, 0), "#0 0.90"),
                              DrawnPerson(kp30[1], None, SKIPPED_RGB, "#1 skipped")])
    assert out.shape == image.shape and not np.array_equal(out, image)
    x, y = (int(round(v)) for v in kp30[0, 0, :2])  # pelvis of person 0: drawn in its colour
    assert tuple(out[y, x]) == (255, 0, 0)
    x, y = (int(round(v)) for v in kp30[1, 16, :2])  # left shoulder of the skipped one: grey
    assert tuple(out[y, x]) == SKIPPED_RGB
    assert tuple(out[200, 100]) == (255, 0, 0)  # the box's left edge


# ------------------------------------------------------------------------------------------ CLI

def test_install_sh_installs_the_demo_extra():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["demo"]
    line = re.search(r"^DEMO_REQS=\((.*)\)$", (REPO / "install.sh").read_text(), re.M).group(1)
    assert [x.strip('"') for x in line.split()] == extra


def test_demo_needs_gradio(monkeypatch):
    from typer.testing import CliRunner

    from dpmesh_infer.cli import app

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    r = CliRunner().invoke(app, ["demo"])
    assert r.exit_code == 5 and "needs gradio" in r.output and "dpmesh-infer[demo]" in r.output, r.output


def test_demo_help_is_light():
    probe = ("import sys; sys.argv = ['dpmesh', 'demo', '--help']\nfrom dpmesh_infer.cli import main\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\n"
             "print('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & {'gradio', 'torch', 'numpy', 'PIL'}))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--max-pixels" in r.stdout, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_busy_port_is_a_usage_error(tiny_weights, tmp_path):
    pytest.importorskip("gradio")
    from typer.testing import CliRunner

    from dpmesh_infer.cli import app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        r = CliRunner().invoke(app, ["demo", "--weights", str(tiny_weights), "--port", str(port), "--device", "cpu",
                                     "--no-render"])
    assert r.exit_code == 2 and "choose another port with --port" in r.output, r.output


# ------------------------------------------------------------------------------------------ the served app

MAX_PIXELS = 1_000_000  # of the served demo (--max-pixels); uploads over 1 MB are refused (--max-file-size)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def served(tiny_weights, tmp_path_factory):
    """``dpmesh demo`` on 127.0.0.1 in a subprocess: (url, log path)."""
    pytest.importorskip("gradio")
    tmp = tmp_path_factory.mktemp("demo_server")
    port = _free_port()
    log = tmp / "server.log"
    env = dict(os.environ, GRADIO_TEMP_DIR=str(tmp / "gradio"), PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dpmesh_infer", "demo", "--weights", str(tiny_weights),
                                 "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--max-pixels",
                                 str(MAX_PIXELS), "--max-file-size", "1mb", "--queue-size", "4"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"dpmesh demo exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"dpmesh demo did not answer on {url}:\n{log.read_text()}")
            time.sleep(0.5)
        yield url, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.mark.xdist_group("demo_server")
def test_api_through_gradio_client(served, examples, tmp_path):
    import trimesh
    from gradio_client import Client, handle_file

    url, _ = served
    client = Client(url, verbose=False, analytics_enabled=False, download_files=str(tmp_path),
                    httpx_kwargs={"timeout": 300})  # (httpx's 5 s default fails on a loaded machine)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    kp = handle_file(str(examples.keypoints))
    # two requests at once: both answered (queued; one run at a time: test_app_is_queued_one_run_at_a_time)
    jobs = [client.submit(images=[handle_file(str(examples.photos[1]))], keypoint_file=kp, camera="fov",
                          camera_value=65, api_name="/run"),
            client.submit(images=[handle_file(str(broken))], keypoint_file=kp, api_name="/run")]
    (html, keypoints, overlay, side, glb, _pick, table, bundle), failed = [job.result(timeout=300) for job in jobs]
    assert "2 people reconstructed in 1 of 1 photo" in html and "Untrained" in html
    for gallery in (keypoints, overlay, side):
        assert len(gallery) == 1 and gallery[0]["caption"] == "plaza.png" and Path(gallery[0]["image"]).is_file()
    assert Image.open(overlay[0]["image"]).size == (400, 300)
    assert len(trimesh.load(glb, process=False).geometry) == 2
    assert [row[2] for row in table["data"]] == ["reconstructed", "reconstructed"]
    with zipfile.ZipFile(bundle) as z:
        people = json.loads(z.read("dpmesh-results/plaza/people.json"))
    assert people["focal_source"].startswith("--fov 65 deg") and len(people["persons"]) == 2
    assert "broken.png: cannot read image" in failed[0] and failed[-1] is None and failed[1] == []

    out = client.predict(images=[handle_file(str(examples.photos[0]))], keypoint_file=None, api_name="/run")
    assert "keypoint detector cannot run" in out[0] and out[-1] is None  # no detector weights here

    large = tmp_path / "large.png"  # 1.2 M pixels, a small file: refused by the pixel limit of the CLI
    Image.new("RGB", (1200, 1000)).save(large)
    out = client.predict(images=[handle_file(str(large))], keypoint_file=kp, api_name="/run")
    assert f"large.png: 1200x1000 = 1200000 pixels exceeds the limit of {MAX_PIXELS} pixels" in out[0]
    heavy = tmp_path / "heavy.png"  # over --max-file-size: the server refuses the upload itself
    heavy.write_bytes(os.urandom(1_200_000))
    boundary = "dpmeshtestboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="heavy.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + heavy.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    assert e.value.code == 413


def test_app_is_queued_one_run_at_a_time(service, examples):
    pytest.importorskip("gradio")
    from dpmesh_infer.demo.app import build_app

    app = build_app(service, examples=examples, queue_size=3)
    assert app._queue.max_size == 3
    (run,) = [fn for fn in app.fns.values() if fn.api_name == "run"]
    assert run.concurrency_limit == 1 and run.queue
    assert [fn.api_name for fn in app.fns.values() if fn.api_visibility == "public"] == ["run"]


def _chrome(download_dir: Path, profile: Path):
    """A headless Chromium driven by Selenium, or pytest.skip with the reason."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.skip(f"selenium is not installed ({e}); bash install.sh installs it")
    browser = next(filter(None, (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no Chromium and chromedriver (Debian: apt-get install chromium chromium-driver; "
                    "bash install.sh does it as root)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--enable-unsafe-swiftshader", "--window-size=1500,1500",
                f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir),
                                           "download.prompt_for_download": False})
    try:
        d = webdriver.Chrome(service=Service(driver), options=opts)
    except WebDriverException as e:
        pytest.skip(f"Chromium does not start here: {e.msg}")
    d.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return d


@pytest.mark.xdist_group("demo_server")
def test_real_browser(served, examples, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = served
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    d = _chrome(downloads, tmp_path / "profile")
    try:
        d.get(url)
        wait = WebDriverWait(d, 180)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#photos input[type=file]"))
        assert "UNTRAINED" in d.find_element(By.ID, "weights-status").text
        d.find_element(By.CSS_SELECTOR, "#photos input[type=file]").send_keys(str(examples.photos[0]))
        d.find_element(By.CSS_SELECTOR, "#keypoint-file input[type=file]").send_keys(str(examples.keypoints))
        def text(elem_id: str) -> str:  # file names are shown as stem and suffix on two lines
            return "".join(d.find_element(By.ID, elem_id).text.split())

        wait.until(lambda d: "street.jpg" in text("photos") and "keypoints.json" in text("keypoint-file"))
        d.find_element(By.ID, "run-button").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#overlay-gallery img"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#scene-3d canvas"))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bundle a[download]"))
        assert "2 people reconstructed in 1 of 1 photo" in d.find_element(By.ID, "messages").text
        table = d.find_element(By.ID, "people-table").text
        assert table.count("reconstructed") == 2 and "street.jpg" in table and "17/17" in table, table
        canvas = d.find_element(By.CSS_SELECTOR, "#scene-3d canvas")
        assert canvas.size["width"] > 100 and canvas.size["height"] > 100
        d.find_element(By.CSS_SELECTOR, "#bundle a[download]").click()
        zips = []
        deadline = time.monotonic() + 120
        while not zips and time.monotonic() < deadline:
            zips = [p for p in downloads.glob("*.zip")]
            time.sleep(0.5)
        assert zips, f"no zip downloaded into {downloads}: {list(downloads.iterdir())}"
        with zipfile.ZipFile(zips[0]) as z:
            names = set(z.namelist())
            people = json.loads(z.read("dpmesh-results/street/people.json"))
        assert {"dpmesh-results/manifest.jsonl", "dpmesh-results/street/scene.glb",
                "dpmesh-results/street/overlay.png", "dpmesh-results/street/person_01.obj"} <= names
        assert people["schema_version"] == 1 and len(people["persons"]) == 2
        time.sleep(2)  # let the 3D view draw its first frames
        d.set_window_size(1500, d.execute_script("return document.body.scrollHeight") + 100)
        d.execute_script("window.scrollTo(0, 0)")
        assert d.save_screenshot(str(tmp_path / "demo.png"))
        assert Image.open(tmp_path / "demo.png").size[0] >= 1000
    finally:
        d.quit()
