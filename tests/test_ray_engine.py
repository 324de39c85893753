"""``dpmesh predict INPUT... --out DIR --engine ray`` (dpmesh_infer.engines.ray_data) on a local Ray.

One local Ray instance (2 CPUs, no dashboard, bound to 127.0.0.1) serves every test of this module; the
module runs on one pytest-xdist worker (``xdist_group``, pyproject's ``--dist loadgroup``), so two workers
never start Ray side by side. The runs compare against the local engine, kill a worker actor (a
deterministic hook: the worker exits its process on a given image, once) and SIGKILL the driver.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.cli import app

pytestmark = pytest.mark.xdist_group("ray")

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray for this module: 2 CPUs, no dashboard, logs in a temporary folder; its GCS address."""
    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="dpray", dir="/tmp")  # (short: Ray's socket paths must fit 107 chars)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, scene):
    """photos/ with 12 images img_00..img_11.png and a corrupt sub/z_corrupt.jpg; kp.json for all of them."""
    image, kp = scene
    root = tmp_path_factory.mktemp("ray_photos") / "photos"
    (root / "sub").mkdir(parents=True)
    names = [f"img_{i:02d}.png" for i in range(12)]
    for i, name in enumerate(names):  # different pictures: shift the people a little
        Image.fromarray(np.roll(image, 4 * i, axis=1)).save(root / name)
    (root / "sub" / "z_corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    entries = [{"file_name": name, "keypoints": (k + [4 * i, 0, 0]).reshape(-1).tolist(), "score": 0.9}
               for i, name in enumerate(names) for k in kp]
    entries += [{"file_name": "sub/z_corrupt.jpg", "keypoints": k.reshape(-1).tolist(), "score": 0.9} for k in kp]
    kp_file = root.parent / "kp.json"
    kp_file.write_text(json.dumps(entries))
    return root, kp_file, names


def _same_files(a: Path, b: Path) -> None:
    """The same files in both image folders, byte for byte (people.json, params.npz, OBJ, GLB)."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir()) and "people.json" in names, (a, b)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), a / name


def test_two_ray_workers_one_killed_give_the_local_files_and_a_bad_image_fails_alone(
        ray_address, photos, tiny_weights, tmp_path, monkeypatch):
    import torch

    from dpmesh_infer.engines import ray_data

    root, kp, names = photos
    local, remote, marker = tmp_path / "local", tmp_path / "ray", tmp_path / "worker_exited"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each Ray worker here (OMP_NUM_THREADS = its 1 CPU): the same float order
    try:
        r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", local, "--chunk", 2, "-q")
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 1, r.output

    # the worker that gets img_05.png exits its process (as if killed) before computing that batch, once
    monkeypatch.setenv(ray_data.TEST_EXIT_ON, "img_05.png")
    monkeypatch.setenv(ray_data.TEST_EXIT_MARKER, str(marker))
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "-o", remote, "--chunk", 2, "--engine", "ray",
            "--workers", 2)
    assert marker.is_file(), "no worker reached img_05.png"  # a worker process died there
    rows_local, rows_ray = manifest(local), manifest(remote)
    assert len(rows_ray) == len(names) + 1 == len({m["image"] for m in rows_ray}), r.output  # one line per image
    by_local, by_ray = {m["image"]: m for m in rows_local}, {m["image"]: m for m in rows_ray}
    for m in rows_ray:  # an image of the killed worker's batch is retried on the restarted actor, or reported
        assert m["status"] == by_local[m["image"]]["status"] or m["error"] == ray_data.LOST_MESSAGE, m
    assert by_ray["img_05.png"]["status"] == "done", by_ray["img_05.png"]  # (Ray retries it: TASK_RETRIES)
    lost = sorted(k for k, m in by_ray.items() if m["error"] == ray_data.LOST_MESSAGE)
    assert r.exit_code == 1, r.output  # the corrupt file failed, the others finished
    assert "failed: sub/z_corrupt.jpg" in r.output and "images/s" in r.output
    bad = by_ray["sub/z_corrupt.jpg"]
    assert bad["error"] == by_local["sub/z_corrupt.jpg"]["error"] and "cannot read image" in bad["error"]
    assert not (remote / "sub" / "z_corrupt").exists()
    for n in names:
        m, ml = by_ray[n], by_local[n]
        if n in lost:
            continue
        assert (m["persons"], m["output"], m["focal_source"], m["skipped_persons"]) == (
            ml["persons"], ml["output"], ml["focal_source"], ml["skipped_persons"])
        assert {"load", "keypoints", "prepare", "infer", "write", "sync"} <= set(m["seconds"])
        _same_files(local / n[:-4], remote / n[:-4])

    monkeypatch.delenv(ray_data.TEST_EXIT_ON)  # a re-run completes what was lost (no Ray when nothing is left)
    r = run("predict", f"{root}/*.png", "-k", kp, "-w", tiny_weights, "-o", remote, "--chunk", 2, "--engine", "ray",
            "-q")
    assert r.exit_code == 0, r.output
    second = {m["output"]: m["status"] for m in manifest(remote)[len(rows_ray):]}
    assert second == {n[:-4]: ("done" if n in lost else "skipped") for n in names}
    for n in lost:
        _same_files(local / n[:-4], remote / n[:-4])


def _wait_stable(out: Path, seconds: float = 1.5, timeout: float = 30) -> set[str]:
    """Wait until the set of finished image folders stops changing (the killed run's workers are gone)."""
    deadline = time.monotonic() + timeout
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        now = {p.parent.name for p in out.glob("*/people.json")}
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= seconds:
            return now
        time.sleep(0.1)
    raise AssertionError("the killed run's workers kept writing")


def test_resume_after_the_driver_is_killed(ray_address, photos, tiny_weights, tmp_path):
    root, kp, names = photos
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONPATH": str(REPO)}  # (the address from the environment)
    args = ["predict", f"{root}/*.png", "-k", kp, "-w", tiny_weights, "-o", out, "--chunk", 1, "--engine", "ray",
            "--workers", 1, "-q"]
    p = subprocess.Popen([sys.executable, "-m", "dpmesh_infer", *map(str, args)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=env, cwd=REPO)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and p.poll() is None:
            if (out / "manifest.jsonl").is_file() and len(manifest(out)) >= 2:
                break
            time.sleep(0.02)
        assert p.poll() is None, f"the run ended before it was killed: {p.stderr.read()[-2000:]}"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    finished = _wait_stable(out)
    assert 2 <= len(finished) < len(names), finished
    reported = {m["output"] for m in manifest(out)}
    assert reported <= finished  # a manifest line only for a finished image
    mtimes = {name: (out / name / "people.json").stat().st_mtime_ns for name in finished}

    r = run("predict", f"{root}/*.png", "-k", kp, "-w", tiny_weights, "-o", out, "--chunk", 2, "--engine", "ray",
            "--workers", 2, "-q")
    assert r.exit_code == 0, r.output
    rerun = {m["output"]: m["status"] for m in manifest(out)[len(reported):]}
    assert rerun == {n[:-4]: ("skipped" if n[:-4] in finished else "done") for n in names}
    assert {name: (out / name / "people.json").stat().st_mtime_ns for name in finished} == mtimes  # not redone
    assert not list(out.rglob("*.tmp"))


def test_a_worker_that_cannot_load_the_weights_is_exit_3_with_the_message(ray_address, photos, tiny_weights,
                                                                          tmp_path):
    root, kp, _ = photos
    bad = tmp_path / "weights"
    shutil.copytree(tiny_weights, bad)
    (bad / "regressor" / "model.safetensors").write_bytes(b"garbage")  # present (the driver's check passes)
    r = run("predict", f"{root}/img_0[01].png", "-k", kp, "-w", bad, "-o", tmp_path / "out", "--engine", "ray", "-q")
    assert r.exit_code == 3, r.output  # the WeightsError raised in the worker, with its class and message
    assert "cannot read weights file" in r.output and "regressor/model.safetensors" in r.output
    assert "Traceback" not in r.output and "RayTaskError" not in r.output


# ------------------------------------------------------------------------- without a cluster

def test_without_ray_a_clear_message_and_exit_5(photos, tmp_path):
    root, kp, _ = photos
    code = ("import sys; sys.modules['ray'] = None\n"  # `import ray` raises ImportError
            "from dpmesh_infer.cli import main\n"
            f"sys.argv = ['dpmesh', 'predict', {str(root / 'img_00.png')!r}, '-k', {str(kp)!r}, "
            f"'-o', {str(tmp_path / 'out')!r}, '--engine', 'ray']\n"
            "main()\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 5, p.stderr
    assert "--engine ray needs Ray Data" in p.stderr and 'pip install "dpmesh-infer[ray]"' in p.stderr
    assert "Traceback" not in p.stderr


def test_importing_the_package_never_imports_ray():
    code = ("import sys, dpmesh_infer, dpmesh_infer.cli, dpmesh_infer.cli.predict, dpmesh_infer.engines.ray_data\n"
            "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "options of --engine ray"),
    (["--ray-address", "127.0.0.1:1"], "options of --engine ray"),
    (["--engine", "spark"], "--engine must be one of local, ray"),
    (["--engine", "ray", "--workers", "0"], "--workers must be at least 1"),
])
def test_engine_usage_errors(photos, tmp_path, args, message):
    root, kp, _ = photos
    r = run("predict", root, "-k", kp, "-o", tmp_path / "out", *args)
    assert r.exit_code == 2 and message in r.output, r.output


def test_an_unreachable_cluster_is_exit_2_at_once(photos, tiny_weights, tmp_path):
    import socket

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("from dpmesh_infer.cli import main; import sys\n"
            f"sys.argv = ['dpmesh', 'predict', {str(photos[0] / 'img_00.png')!r}, '-k', {str(photos[1])!r}, "
            f"'-w', {str(tiny_weights)!r}, '-o', {str(tmp_path / 'out')!r}, '--engine', 'ray', "
            f"'--ray-address', '127.0.0.1:{port}']\nmain()\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 2, p.stderr
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}" in p.stderr and "Traceback" not in p.stderr


def test_engine_ray_is_for_folder_runs(photos, tmp_path):
    root, kp, _ = photos
    r = run("predict", root / "img_00.png", "-k", kp, "-o", tmp_path / "x.obj", "--engine", "ray")
    assert r.exit_code == 2 and "give a folder as --out" in r.output, r.output


def test_worker_pool_fits_the_cluster():
    from dpmesh_infer.engines.ray_data import WorkerResources, plan_resources
    from dpmesh_infer.errors import InputError

    cpu_nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}]
    assert plan_resources({"CPU": 8.0}, cpu_nodes, workers=None, device="auto") == WorkerResources(1, 0.0, 8.0)
    assert plan_resources({"CPU": 8.0}, cpu_nodes, workers=3, device="auto") == WorkerResources(3, 0.0, 2.0)
    two_nodes = [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 2.0}}] * 2
    assert plan_resources({"CPU": 8.0, "GPU": 4.0}, two_nodes, workers=None, device="auto") == WorkerResources(
        4, 1.0, 1.0)
    assert plan_resources({"CPU": 8.0, "GPU": 4.0}, two_nodes, workers=2, device="cpu") == WorkerResources(
        2, 0.0, 4.0)  # (at most one node's CPUs per worker)
    for cluster, workers, device, message in [({"CPU": 2.0}, 3, "auto", "the Ray cluster has 2"),
                                              ({"CPU": 8.0, "GPU": 2.0}, 3, "auto", "needs a GPU"),
                                              ({"CPU": 8.0}, None, "cuda", "has no GPU"),
                                              ({"CPU": 8.0, "GPU": 2.0}, None, "cuda:1", "one GPU of its own")]:
        with pytest.raises(InputError, match=message):
            plan_resources(cluster, cpu_nodes, workers=workers, device=device)


def test_unreported_images_and_wrapped_worker_errors(tmp_path):
    from dpmesh_infer.batch import DONE_FILE, ImageRecord
    from dpmesh_infer.engines.ray_data import (
        LOST_MESSAGE,
        dpmesh_cause,
        record_fields,
        record_from_fields,
        unreported_record,
    )
    from dpmesh_infer.errors import WeightsError
    from dpmesh_infer.inputs import InputImage

    lost, kept = InputImage(tmp_path / "a.png", "a.png", "a"), InputImage(tmp_path / "b.png", "b.png", "b")
    (tmp_path / "out" / "b").mkdir(parents=True)
    (tmp_path / "out" / "b" / DONE_FILE).write_text(json.dumps({"persons": [{}, {}, {}]}))
    rec = unreported_record(lost, tmp_path / "out")
    assert (rec.status, rec.error, rec.out) == ("failed", LOST_MESSAGE, tmp_path / "out" / "a")
    rec = unreported_record(kept, tmp_path / "out")
    assert (rec.status, rec.persons) == ("done", 3)

    rec = ImageRecord(kept, "done", tmp_path / "out" / "b", persons=2, skipped_persons=[(1, "no keypoint")],
                      dropped=["d"], seconds={"infer": 0.5}, focal_source="default", warnings=["w"])
    back = record_from_fields(kept, tmp_path / "out", json.loads(json.dumps(record_fields(rec))))
    assert back == rec

    class RayTaskError(Exception):  # the shape of Ray's wrapper: the worker's exception in .cause
        def __init__(self, cause):
            super().__init__(f"ray.exceptions.RayTaskError: Traceback ...\n{cause}")
            self.cause = cause

    from dpmesh_infer.engines.ray_data import startup_error
    from dpmesh_infer.errors import DpmeshError, RenderError

    err = startup_error("RenderError", "no headless OpenGL", 5)
    assert type(err) is RenderError and str(err) == "no headless OpenGL" and err.exit_code == 5
    err = startup_error("SomeOtherError", "boom", 4)
    assert type(err) is DpmeshError and err.exit_code == 4

    inner = WeightsError("weights directory /x is incomplete")
    try:
        raise RuntimeError("execution failed") from RayTaskError(inner)
    except RuntimeError as e:
        assert dpmesh_cause(e) is inner
    assert dpmesh_cause(RuntimeError("other")) is None
