"""Fault injection (issue 10): a user's files are never lost, every failure is a clear message with the
documented exit code (never a traceback), runs survive kills, concurrency, corrupt checkpoints, unwritable
outputs and hostile files. Subprocesses where the CLI process itself is the point (signals, hangs)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from dpmesh_infer.cli import app
from dpmesh_infer.errors import EXIT_TERMINATED

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    r = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in r.output, r.output
    return r


def flat(r) -> str:
    return " ".join(r.output.split())


def dpmesh(*args, timeout=300, **kw):
    """The real CLI in a subprocess (this checkout's code)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "dpmesh_infer", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


@pytest.fixture()
def photo(tmp_path, scene):
    image, kp = scene
    img = tmp_path / "photo.jpg"
    Image.fromarray(image).save(img)
    kp_file = tmp_path / "photo.json"
    kp_file.write_text(json.dumps([{"keypoints": k.reshape(-1).tolist(), "score": 0.9} for k in kp]))
    return img, kp_file


@pytest.fixture()
def folder(tmp_path, scene):
    image, kp = scene
    root = tmp_path / "photos"
    root.mkdir()
    names = [f"img{i}.png" for i in range(4)]
    for n in names:
        Image.fromarray(image).save(root / n)
    kp_file = tmp_path / "kp.json"
    kp_file.write_text(json.dumps([{"file_name": n, "keypoints": k.reshape(-1).tolist()} for n in names for k in kp]))
    return root, kp_file, names


def manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- data loss


def test_sidecar_json_never_overwrites_the_keypoint_file(photo, tiny_weights, tmp_path):
    img, kp = photo
    before = kp.read_bytes()
    r = run("predict", img, "-k", kp, "-w", tiny_weights, "--out", tmp_path / "photo.obj")
    assert r.exit_code == 2 and "photo.json" in flat(r) and "keypoint file" in flat(r) and "overwritten" in flat(r)
    r = run("predict", img, "-k", kp, "-w", tiny_weights, "--out", kp)  # --out is the -k file
    assert r.exit_code == 2 and "keypoint file" in flat(r)
    r = run("predict", img, "-k", kp, "-w", tiny_weights, "--out", tmp_path / "x" / ".." / "photo.jpg")
    assert r.exit_code == 2  # not a supported output suffix, and the input image besides
    assert kp.read_bytes() == before and not (tmp_path / "photo.obj").exists()


def test_folder_outputs_never_overwrite_inputs(folder, tiny_weights, tmp_path):
    root, kp, names = folder
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "--out", root)
    assert r.exit_code == 2 and "also an input folder" in flat(r)
    # an input image where the run would write an image folder's render
    (tmp_path / "out" / "img0").mkdir(parents=True)
    trap = tmp_path / "out" / "img0" / "overlay.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(trap)
    r = run("predict", root, trap, "-k", kp, "-w", tiny_weights, "--out", tmp_path / "out", "--overwrite")
    assert r.exit_code == 2 and str(trap) in flat(r)
    assert trap.is_file()
    # the output folder inside the weights directory
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "--out", tiny_weights / "results")
    assert r.exit_code == 2 and "weights directory" in flat(r)


def test_convert_official_never_deletes_its_checkpoint(tmp_path):
    out = tmp_path / "w"
    out.mkdir()
    ckpt = out / "3dpw_best_ckpt.pth.tar"
    ckpt.write_bytes(b"x" * 100)
    r = run("weights", "convert-official", ckpt, "--out", out, "--overwrite")
    assert r.exit_code == 2 and "contains the checkpoint" in flat(r) and ckpt.is_file()
    r = run("weights", "convert-official", ckpt, "--out", out)  # not empty, no --overwrite
    assert r.exit_code == 2 and "not empty" in flat(r)
    r = run("weights", "convert-official", tmp_path / "nope.pth", "--out", tmp_path / "w2")
    assert r.exit_code == 3 and "not found" in flat(r)


def test_concurrent_runs_into_one_folder_are_refused(folder, tiny_weights, tmp_path):
    from dpmesh_infer.locks import RunLock

    root, kp, names = folder
    out = tmp_path / "out"
    with RunLock(out):  # "another run" holds the folder
        r = run("predict", root, "-k", kp, "-w", tiny_weights, "--out", out, "-q")
        assert r.exit_code == 2, r.output
        text = flat(r)
        assert "another dpmesh run is writing into" in text and f"pid {os.getpid()}" in text
        assert socket.gethostname() in text
    assert not (out / "img0").exists()  # nothing was computed or written
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "--out", out, "-q")  # lock released: runs
    assert r.exit_code == 0, r.output


def test_two_real_runs_at_once_compute_each_image_once(folder, tiny_weights, tmp_path):
    root, kp, names = folder
    out = tmp_path / "out"
    args = ("predict", root, "-k", kp, "-w", tiny_weights, "--out", out, "-q", "--chunk", "1")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, "-m", "dpmesh_infer", *map(str, args)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    codes = sorted(c for c, _ in results)
    assert codes in ([0, 0], [0, 2]), results  # the second either waited for nothing (all finished) or refused
    if codes == [0, 2]:
        assert any("another dpmesh run is writing into" in " ".join(err.split()) for _, err in results)
    done = [m["image"] for m in manifest(out) if m["status"] == "done"]
    assert sorted(done) == sorted(names)  # every image computed exactly once


def test_kill_during_a_folder_run_loses_nothing_and_resume_redoes_nothing(folder, tiny_weights, tmp_path):
    root, kp, names = folder
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ("predict", root, "-k", kp, "-w", tiny_weights, "--out", out, "-q", "--chunk", "1")
    p = subprocess.Popen([sys.executable, "-m", "dpmesh_infer", *map(str, args)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:  # kill -9 right after the first finished image
        if (out / "manifest.jsonl").is_file() and (out / "manifest.jsonl").read_text().count("\n") >= 1:
            break
        time.sleep(0.01)
    p.kill()
    p.wait(timeout=60)
    finished = {m["image"] for m in manifest(out) if m["status"] == "done"}
    assert finished, "the run was killed before any image finished"
    for name in names:  # every image folder is finished (all files intact) or has no people.json
        d = out / Path(name).stem
        if (d / "people.json").is_file():
            assert len(json.loads((d / "people.json").read_text())["persons"]) == 2
            with np.load(d / "params.npz", allow_pickle=False) as z:
                assert z["vertices"].shape == (2, 6890, 3)
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "--out", out, "-q", "--chunk", "1")
    assert r.exit_code == 0, r.output
    rows = manifest(out)
    resumed = {m["image"]: m["status"] for m in rows[len(rows) - len(names):]}
    assert {n for n, st in resumed.items() if st == "skipped"} >= finished  # finished work was not redone
    assert set(resumed.values()) <= {"done", "skipped"} and not list(out.rglob("*.tmp"))


_KILL_DURING_WRITE = """
import sys, threading, time
from pathlib import Path
import runpy
from dpmesh_infer.writers import glb as glb_writer

real, lock, calls = glb_writer.GlbWriter.__call__, threading.Lock(), []
marker = Path(sys.argv.pop(1))


def slow(self, result, **kw):  # the third scene.glb of the run hangs half-way through its image's files
    with lock:
        calls.append(1)
        n = len(calls)
    if n == 3:
        marker.write_text("writing")
        time.sleep(600)
    return real(self, result, **kw)


glb_writer.GlbWriter.__call__ = slow
sys.argv[0] = "dpmesh"
runpy.run_module("dpmesh_infer", run_name="__main__")
"""


def test_kill_9_during_a_write_loses_nothing_and_resume_redoes_only_the_unfinished(folder, tiny_weights, tmp_path):
    """kill -9 while a chunk's files are being written (several writer threads, one image stopped after
    its params.npz and meshes, before scene.glb): the chunk before is finished and intact, no image of the
    killed chunk has a completion mark, and the next run redoes exactly the unfinished images."""
    root, kp, names = folder
    out, marker = tmp_path / "out", tmp_path / "writing"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ("predict", root, "-k", kp, "-w", tiny_weights, "--out", out, "-q", "--chunk", "2", "--writers", "2")
    p = subprocess.Popen([sys.executable, "-c", _KILL_DURING_WRITE, str(marker), *map(str, args)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None and not marker.exists():
        time.sleep(0.01)
    assert marker.exists(), p.stderr.read().decode() if p.poll() is not None else "timed out"
    p.kill()  # SIGKILL
    p.wait(timeout=60)
    finished = {m["image"] for m in manifest(out) if m["status"] == "done"}
    assert finished == {"img0.png", "img1.png"}  # the first chunk; the second was being written
    for name in names:
        d = out / Path(name).stem
        if name in finished:
            assert len(json.loads((d / "people.json").read_text())["persons"]) == 2
            with np.load(d / "params.npz", allow_pickle=False) as z:
                assert z["vertices"].shape == (2, 6890, 3)
            assert (d / "scene.glb").stat().st_size > 0 and len(list(d.glob("person_*.obj"))) == 2
        else:
            assert not (d / "people.json").exists()
    assert (out / "img2" / "params.npz").is_file() or (out / "img3" / "params.npz").is_file()  # mid-write
    r = run("predict", root, "-k", kp, "-w", tiny_weights, "--out", out, "-q", "--chunk", "2")
    assert r.exit_code == 0, r.output
    rows = manifest(out)
    resumed = {m["image"]: m["status"] for m in rows[len(rows) - len(names):]}
    assert resumed == {"img0.png": "skipped", "img1.png": "skipped", "img2.png": "done", "img3.png": "done"}
    assert not list(out.rglob("*.tmp"))


def test_a_crash_in_the_middle_of_an_image_folder_is_redone_cleanly(folder, tiny_weights, tmp_path, monkeypatch):
    """A write that dies after params.npz (no people.json yet) leaves an unfinished folder and a stale
    temporary file; the next run redoes that image and removes the leftovers."""
    from dpmesh_infer.writers.glb import GlbWriter

    root, kp, names = folder
    out = tmp_path / "out"
    real = GlbWriter.__call__

    def dies(*a, **k):
        (out / "img0" / ".scene.glb.abc.tmp").write_bytes(b"partial")
        raise KeyboardInterrupt  # the process goes down while writing img0's scene.glb

    monkeypatch.setattr(GlbWriter, "__call__", dies)
    r = run("predict", root / "img0.png", "-k", kp, "-w", tiny_weights, "--out", out, "-q")
    assert r.exit_code == 130
    assert (out / "img0" / "params.npz").is_file() and not (out / "img0" / "people.json").exists()
    monkeypatch.setattr(GlbWriter, "__call__", real)
    r = run("predict", root / "img0.png", "-k", kp, "-w", tiny_weights, "--out", out, "-q")
    assert r.exit_code == 0 and (out / "img0" / "people.json").is_file()
    assert not list(out.rglob("*.tmp"))


def test_sigterm_keeps_finished_work_and_exits_143(folder, tiny_weights, tmp_path):
    root, kp, names = folder
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    args = ("predict", root, "-k", kp, "-w", tiny_weights, "--out", out, "-q", "--chunk", "1")
    p = subprocess.Popen([sys.executable, "-m", "dpmesh_infer", *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        if (out / "manifest.jsonl").is_file() and (out / "manifest.jsonl").read_text().strip():
            break
        time.sleep(0.01)
    if p.poll() is not None:
        pytest.skip("the run finished before SIGTERM could be sent (machine too fast for this test)")
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=120)
    err = p.stderr.read()
    assert code == EXIT_TERMINATED, err
    assert "Traceback" not in err and "resume" in err
    for m in manifest(out):
        if m["status"] == "done":
            assert (out / m["output"] / "people.json").is_file()


# --------------------------------------------------------------------------- corrupt checkpoints


def _write_ckpt(folder: Path, step: int) -> Path:
    import torch

    from dpmesh_infer.train.checkpoints import save_torch, write_manifest

    d = folder / f"step-{step:09d}-s0e0"
    d.mkdir(parents=True)
    save_torch({"step": step, "model": {"w": torch.full((100,), float(step))}}, d / "state.pt")
    save_torch({"cpu": torch.get_rng_state()}, d / "rng-rank0.pt")
    write_manifest(d)
    (folder / "latest").write_text(d.name + "\n")
    return d


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, caplog):
    from dpmesh_infer.errors import CheckpointError
    from dpmesh_infer.train.checkpoints import load_torch
    from dpmesh_infer.train.trainer import latest_checkpoint

    ckpts = tmp_path / "run" / "checkpoints"
    old, new = _write_ckpt(ckpts, 5), _write_ckpt(ckpts, 10)
    assert latest_checkpoint(tmp_path / "run") == new
    state = new / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # a full disk truncated it
    with caplog.at_level("WARNING"):
        assert latest_checkpoint(tmp_path / "run") == old
    assert str(new) in caplog.text and "truncated" in caplog.text
    with pytest.raises(CheckpointError, match="truncated, corrupt") as e:
        load_torch(state)
    assert "weights_only" not in str(e.value)
    (old / "rng-rank0.pt").write_bytes(b"\x80\x02garbage")  # corrupt, same size is irrelevant: checksum
    with pytest.raises(CheckpointError, match="no intact checkpoint to resume from") as e:
        latest_checkpoint(tmp_path / "run")
    assert str(old) in str(e.value) and str(new) in str(e.value) and "weights_only" not in str(e.value)


def test_vqvae_resume_from_a_corrupt_checkpoint(tmp_path):
    """`dpmesh train vqvae --resume`: a truncated checkpoint.pt falls back to the previous one with a warning;
    with both broken it is exit 3 and a message without torch's advice."""
    from dpmesh_infer.models.pose_decoders import PoseDecoderConfig

    poses = tmp_path / "poses"
    poses.mkdir()
    rng = np.random.default_rng(0)
    np.savez(poses / "a.npz", poses=rng.normal(0, 0.3, (64, 72)), mocap_framerate=30.0)
    cfg = tmp_path / "model.json"
    PoseDecoderConfig(type="vqvae", num_tokens=4, codebook_size=8, token_dim=8, enc_hidden_dim=8,
                      enc_hidden_inter_dim=8, enc_token_inter_dim=4, enc_num_blocks=1).save_json(cfg)
    out = tmp_path / "run"
    common = ("train", "vqvae", "--poses", poses, "--out", out, "--batch-size", "16", "--model-config", cfg,
              "--device", "cpu", "--checkpoint-every", "2")
    r = run(*common, "--epochs", "2")
    assert r.exit_code == 0, r.output
    ck = out / "checkpoint.pt"
    assert ck.is_file() and (out / "checkpoint.prev.pt").is_file() and (out / "checkpoint.pt.sha256").is_file()
    ck.write_bytes(ck.read_bytes()[:100])
    r = run(*common, "--epochs", "3", "--resume")
    assert r.exit_code == 0, r.output  # resumed from checkpoint.prev.pt
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (out / name).write_bytes(b"\x80\x02garbage")
    r = run(*common, "--epochs", "4", "--resume")
    assert r.exit_code == 3 and "no intact checkpoint" in flat(r)
    assert "weights_only" not in r.output


# --------------------------------------------------------------------------- unwritable outputs


def test_unwritable_single_output_fails_before_loading_weights(photo, tmp_path):
    img, kp = photo
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    missing_weights = tmp_path / "no_weights"  # a weights error (3) would mean the weights were tried first
    r = run("predict", img, "-k", kp, "-w", missing_weights, "--out", blocker / "x.obj")
    assert r.exit_code == 2 and "is a file, not a folder" in flat(r)
    r = run("predict", img, "-k", kp, "-w", missing_weights, "--out", tmp_path)  # a folder is fine...
    assert r.exit_code == 3  # ...and only then the weights are looked for
    if os.access("/sys", os.W_OK) or not Path("/sys").is_dir():
        return
    r = run("predict", img, "-k", kp, "-w", missing_weights, "--out", "/sys/dpmesh_out.obj")
    assert r.exit_code == 2 and "cannot write the output file" in flat(r)


def test_unwritable_outputs_of_other_commands(tmp_path, folder):
    root, kp, names = folder
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    r = run("predict", root, "-k", kp, "--out", blocker / "results")
    assert r.exit_code == 2 and "cannot write" in flat(r)
    r = run("detect", root, "--out", blocker / "kp.json", "--device", "cpu", "--no-progress")
    assert r.exit_code == 2 and "cannot write the output file" in flat(r)


# --------------------------------------------------------------------------- hostile files


def test_hostile_keypoint_json_is_exit_2(photo, tiny_weights, tmp_path):
    img, kp = photo
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    r = run("predict", img, "-k", deep, "-w", tiny_weights, "--out", tmp_path / "o.npz")
    assert r.exit_code == 2 and "nested too deeply" in flat(r)
    cases = {"nan.json": '[{"keypoints": [NaN' + ", 1" * 50 + "]}]", "types.json": '{"people": 7}',
             "latin1.json": "[{\"keypoints\": \"\xe9\"}]", "empty.json": "", "huge.json": '[{"keypoints": [1e999'
             + ", 1" * 50 + "]}]"}
    for name, text in cases.items():
        (tmp_path / name).write_bytes(text.encode("latin-1"))
        r = run("predict", img, "-k", tmp_path / name, "-w", tiny_weights, "--out", tmp_path / "o.npz")
        assert r.exit_code == 2, (name, r.output)
    bom = tmp_path / "bom.json"  # a UTF-8 byte-order mark (Windows editors) is fine
    bom.write_bytes(b"\xef\xbb\xbf" + kp.read_bytes())
    r = run("predict", img, "-k", bom, "-w", tiny_weights, "--out", tmp_path / "bom.npz")
    assert r.exit_code == 0, r.output


def test_hostile_config_and_garbage_smpl(tmp_path):
    deep = tmp_path / "train.json"
    deep.write_text("{\"a\":" * 100_000 + "1" + "}" * 100_000)
    r = run("train", "dpmesh", "--config", deep, "--out", tmp_path / "run")
    assert r.exit_code == 2 and "nested too deeply" in flat(r)
    garbage = tmp_path / "SMPL_NEUTRAL.pkl"
    garbage.write_bytes(os.urandom(2000))
    r = run("weights", "import-smpl", garbage, "--weights", tmp_path / "w")
    assert r.exit_code == 3 and "SMPL" in r.output and not (tmp_path / "w" / "smpl" / "SMPL_NEUTRAL.npz").exists()


def test_invalid_weights_config_is_exit_3_naming_the_file(tiny_weights, tmp_path, photo):
    import shutil

    img, kp = photo
    w = tmp_path / "w"
    shutil.copytree(tiny_weights, w)
    cfg = json.loads((w / "regressor" / "config.json").read_text())
    cfg["nhead"] = -3
    (w / "regressor" / "config.json").write_text(json.dumps(cfg))
    r = run("predict", img, "-k", kp, "-w", w, "--out", tmp_path / "o.npz")
    assert r.exit_code == 3 and str(w / "regressor" / "config.json") in flat(r) and "nhead" in flat(r)


# --------------------------------------------------------------------------- inputs that are not images


def test_directory_and_fifo_named_like_images(photo, tiny_weights, tmp_path):
    img, kp = photo
    d = tmp_path / "dir.jpg"
    d.mkdir()
    r = run("predict", d, "-k", kp, "-w", tiny_weights, "--out", tmp_path / "o.npz")
    assert r.exit_code == 2 and "is a directory" in flat(r)
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    r = dpmesh("predict", fifo, "-k", kp, "-w", tiny_weights, "--out", tmp_path / "o.npz", timeout=120)  # no hang
    assert r.returncode == 2 and "FIFO" in r.stderr and "Traceback" not in r.stderr


def test_folder_run_lists_non_regular_entries_and_duplicate_names(folder, tiny_weights, tmp_path):
    root, kp, names = folder
    (root / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (root / "album.jpg").mkdir()
    os.mkfifo(root / "stream.png")
    table = {"images": [{"id": 1, "file_name": "img0.png"}, {"id": 2, "file_name": "img0.png"}]
             + [{"id": 3 + i, "file_name": n} for i, n in enumerate(names[1:])],
             "annotations": [{"image_id": i, "keypoints": k["keypoints"]}
                             for i, k in zip([1, 2, 3, 3, 4, 4, 5, 5], json.loads(kp.read_text()))]}
    table_file = tmp_path / "table.json"
    table_file.write_text(json.dumps(table))
    out = tmp_path / "out"
    r = run("predict", root, "-k", table_file, "-w", tiny_weights, "--out", out)
    assert r.exit_code == 0, r.output
    rows = manifest(out)
    ignored = {Path(m["path"]).name: m["error"] for m in rows if m["status"] == "ignored"}
    assert set(ignored) == {"broken.jpg", "album.jpg", "stream.png"}
    assert "broken symbolic link" in ignored["broken.jpg"] and "FIFO" in ignored["stream.png"]
    assert "directory" in ignored["album.jpg"]
    assert "entries named like images ignored" in r.output and "ignored:" in r.output
    img0 = next(m for m in rows if m["image"] == "img0.png")
    assert img0["status"] == "done" and "merged" in img0["warnings"][0] and "1, 2" in img0["warnings"][0]


def test_decompression_bomb_message_quotes_the_real_limit(tmp_path):
    from dpmesh_infer.errors import ImageError
    from dpmesh_infer.images import load_image

    big = tmp_path / "big.png"
    Image.new("RGB", (3000, 1000)).save(big)  # 3 M pixels: more than 2x the 1 M limit (PIL's own bomb check)
    for limit in (1_000_000, 2_000_000):
        with pytest.raises(ImageError, match=f"exceeds the limit of {limit} pixels"):
            load_image(big, max_pixels=limit)
    assert load_image(big, max_pixels=3_000_000).shape == (1000, 3000, 3)


def test_outputs_follow_the_umask(folder, tiny_weights, tmp_path):
    root, kp, names = folder
    out = tmp_path / "out"
    r = dpmesh("predict", root / "img0.png", "-k", kp, "-w", tiny_weights, "--out", out, "-q",
               preexec_fn=lambda: os.umask(0o022))
    assert r.returncode == 0, r.stderr
    modes = {p.relative_to(out).as_posix(): oct(p.stat().st_mode & 0o777) for p in out.rglob("*")}
    assert modes["img0/people.json"] == modes["img0/params.npz"] == modes["img0/person_00.obj"] == "0o644"
    assert modes["img0"] == "0o755"
