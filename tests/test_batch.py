"""Folder runs of `dpmesh predict INPUT... --out DIR` (dpmesh_infer.batch): outputs, manifest, resume."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.cli import app

runner = CliRunner()
NAMES = ("a.png", "b.jpg", "sub/c.png")  # sorted order of the folder scan


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def photos(tmp_path, scene):
    """photos/ with 3 images, a non-image file and a corrupt .jpg in a subfolder; kp.json for them."""
    image, kp = scene
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    for name in NAMES:
        Image.fromarray(image).save(root / name)
    (root / "notes.txt").write_text("not an image")
    (root / "sub" / "z_corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    entries = [{"file_name": name, "keypoints": k.reshape(-1).tolist(), "score": 0.9}
               for name in NAMES + ("sub/z_corrupt.jpg",) for k in kp]
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps(entries))
    return root, kp_file


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def check_outputs(folder, persons=2):
    import trimesh

    params = json.loads((folder / "people.json").read_text())
    assert params["schema_version"] == 1 and len(params["persons"]) == persons
    with np.load(folder / "params.npz", allow_pickle=False) as z:
        assert z["vertices"].shape == (persons, 6890, 3) and z["K"].shape == (3, 3)
    for i in range(persons):
        obj = folder / f"person_{i:02d}.obj"
        assert sum(line.startswith("v ") for line in obj.read_text().splitlines()) == 6890
        mesh = trimesh.load(obj, force="mesh", process=False)  # (unused synthetic-SMPL vertices are dropped)
        assert mesh.faces.shape == (13776, 3)
    scene = trimesh.load(folder / "scene.glb")
    assert len(scene.geometry) == persons


def test_folder_run_outputs_manifest_resume_overwrite(photos, tiny_weights, tmp_path):
    root, kp = photos
    out = tmp_path / "out"
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", out, "--chunk", 2)
    assert r.exit_code == 1, r.output  # the corrupt file failed, the others finished
    assert "z_corrupt.jpg" in r.output and "notes.txt" in r.output
    for name in NAMES:
        check_outputs(out / name.rsplit(".", 1)[0])
    assert not (out / "sub" / "z_corrupt").exists()
    rows = {m["image"]: m for m in manifest(out)}
    assert {n: rows[n]["status"] for n in rows} == {**{n: "done" for n in NAMES}, "sub/z_corrupt.jpg": "failed"}
    assert rows["a.png"]["persons"] == 2 and rows["a.png"]["error"] is None and "infer" in rows["a.png"]["seconds"]
    assert "cannot read image" in rows["sub/z_corrupt.jpg"]["error"]
    # wall seconds of every step; thread CPU seconds of the host steps (the networks' CPU time is torch's)
    wall, cpu = rows["a.png"]["seconds"], rows["a.png"]["cpu_seconds"]
    assert set(wall) == {"load", "keypoints", "prepare", "infer", "write", "sync"}
    assert set(cpu) == set(wall) - {"infer"}
    assert all(0 <= cpu[k] <= wall[k] + 0.02 for k in cpu) and cpu["write"] > 0, (wall, cpu)

    # every output file (the manifest is appended to and the run lock rewritten by each run)
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*")
              if p.is_file() and p.name not in ("manifest.jsonl", ".dpmesh.lock")}
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", out)  # resume: nothing redone
    assert r.exit_code == 1, r.output
    second = manifest(out)[4:]
    assert {m["image"]: m["status"] for m in second} == {**{n: "skipped" for n in NAMES}, "sub/z_corrupt.jpg": "failed"}
    assert all(m["persons"] == 2 for m in second if m["status"] == "skipped")
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", out, "--overwrite", "--quiet")
    assert r.exit_code == 1, r.output
    assert [m["status"] for m in manifest(out)[8:]].count("done") == 3
    assert (out / "a" / "people.json").stat().st_mtime_ns > mtimes[out / "a" / "people.json"]
    check_outputs(out / "a")


def test_glob_input_and_all_done_exit_0(photos, tiny_weights, tmp_path):
    root, kp = photos
    out = tmp_path / "g"
    r = run("predict", f"{root}/**/*.png", "-k", kp, "-w", tiny_weights, "-o", out)
    assert r.exit_code == 0, r.output
    check_outputs(out / "a")
    check_outputs(out / "sub" / "c")
    assert not (out / "b").exists()
    assert [m["status"] for m in manifest(out)] == ["done", "done"]
    assert "images/s" in r.output and "persons/s" in r.output


def test_resume_after_interrupt(photos, tiny_weights, tmp_path, monkeypatch):
    from dpmesh_infer.pipeline import Pipeline

    root, kp = photos
    out = tmp_path / "out"
    real_call = Pipeline.infer  # folder runs: prepare (in a thread) then infer (on the calling thread)
    calls = []

    def interrupted_call(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "infer", interrupted_call)
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", out, "--chunk", 2)
    assert r.exit_code == 130, r.output
    check_outputs(out / "a")
    check_outputs(out / "b")
    assert not (out / "sub").exists()  # the interrupted chunk left nothing behind
    assert not list(out.rglob("*.tmp"))
    monkeypatch.setattr(Pipeline, "infer", real_call)
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", out, "--chunk", 2)
    assert r.exit_code == 1, r.output
    last = {m["image"]: m["status"] for m in manifest(out)[2:]}
    assert last == {"a.png": "skipped", "b.jpg": "skipped", "sub/c.png": "done", "sub/z_corrupt.jpg": "failed"}
    check_outputs(out / "sub" / "c")


def test_missing_keypoints_and_no_person_fail_alone(photos, tiny_weights, tmp_path):
    root, kp = photos
    entries = [e for e in json.loads(kp.read_text()) if e["file_name"] != "b.jpg"]
    for e in entries:
        if e["file_name"] == "sub/c.png":
            e["keypoints"] = [0.0] * 51
    kp.write_text(json.dumps(entries))
    out = tmp_path / "out"
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", out, "-q")
    assert r.exit_code == 1, r.output
    rows = {m["image"]: m for m in manifest(out)}
    assert rows["a.png"]["status"] == "done"
    assert rows["b.jpg"]["status"] == "failed" and "no keypoints" in rows["b.jpg"]["error"]
    assert rows["sub/c.png"]["status"] == "failed" and "no person" in rows["sub/c.png"]["error"]


def test_unwritable_output_and_usage_errors(photos, tiny_weights, tmp_path):
    root, kp = photos
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", blocker / "out")
    assert r.exit_code == 2 and "cannot write to the output folder" in r.output and "Traceback" not in r.output
    r = run("predict", tmp_path / "nothing_here", "-k", kp, "-w", tiny_weights, "-o", tmp_path / "o")
    assert r.exit_code == 2 and "input not found" in r.output
    r = run("predict", f"{root}/*.gif", "-k", kp, "-w", tiny_weights, "-o", tmp_path / "o")
    assert r.exit_code == 2 and "no image file matches" in r.output
    r = run("predict", root, "-k", kp, "-w", tmp_path / "no_weights", "-o", tmp_path / "o")
    assert r.exit_code == 3


def test_single_unusable_input_to_folder_exits_4(photos, tiny_weights, tmp_path):
    root, kp = photos
    r = run("predict", root / "sub" / "z_corrupt.jpg", "-k", kp, "-w", tiny_weights, "-o", tmp_path / "o")
    assert r.exit_code == 4 and "cannot read image" in r.output
    r = run("predict", root / "a.png", "-k", kp, "-w", tiny_weights, "-o", tmp_path / "o")
    assert r.exit_code == 0, r.output
    check_outputs(tmp_path / "o" / "a")


def test_same_output_folder_is_a_usage_error(tmp_path, scene, tiny_weights):
    image, _ = scene
    (tmp_path / "p").mkdir()
    Image.fromarray(image).save(tmp_path / "p" / "x.png")
    Image.fromarray(image).save(tmp_path / "p" / "x.jpg")
    r = run("predict", tmp_path / "p", "-w", tiny_weights, "-o", tmp_path / "o")
    assert r.exit_code == 2 and "would both write" in r.output
