"""The one atomic writer (atomic.py) and the one weights-layout manifest (weights/layout.py)."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from dpmesh_infer import atomic
from dpmesh_infer.errors import InputError, WeightsError
from dpmesh_infer.weights import layout


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_umask_permissions_and_replace_atomically(tmp_path):
    p = atomic.write_text(tmp_path / "sub" / "a.txt", "one")
    assert p.read_text() == "one" and _mode(p) == 0o666 & ~atomic.umask()
    atomic.write_bytes(p, b"two", fsync=False)
    assert p.read_bytes() == b"two"
    with pytest.raises(ZeroDivisionError):
        atomic.write_with(p, lambda f: (f.write(b"partial"), 1 / 0))
    assert p.read_bytes() == b"two"  # untouched
    assert sorted(x.name for x in p.parent.iterdir()) == ["a.txt"]  # no temporary file left


def test_write_bytes_takes_any_buffer_and_leaves_nothing_behind_when_it_fails(tmp_path, monkeypatch):
    import numpy as np

    p = atomic.write_bytes(tmp_path / "new" / "deeper" / "a.bin", np.arange(3, dtype=np.uint32), fsync=True)
    assert p.read_bytes() == np.arange(3, dtype=np.uint32).tobytes() and _mode(p) == 0o666 & ~atomic.umask()
    big = os.urandom(3 << 20)  # several write() calls may be needed; every byte arrives
    assert atomic.write_bytes(p, memoryview(big)).read_bytes() == big
    real_write, calls = os.write, []

    def failing_write(fd, data):  # the disk fills up after the first piece
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write(fd, data[:1000])

    monkeypatch.setattr(atomic.os, "write", failing_write)
    with pytest.raises(OSError, match="No space"):
        atomic.write_bytes(p, b"x" * 5000)
    monkeypatch.undo()
    assert p.read_bytes() == big and sorted(x.name for x in p.parent.iterdir()) == ["a.bin"]
    # temporary names: hidden, beside the target, what a folder run's clean-up globs for
    f = atomic.AtomicFile(tmp_path / "b.txt", "w")
    assert f._tmp.parent == tmp_path and f._tmp.name.startswith(".b.txt.") and f._tmp.name.endswith(".tmp")
    f.discard()
    assert not list(tmp_path.glob(".*.tmp"))


def _modes_under_umask(mask: int, folder) -> list[str]:
    """(file mode, staging-folder mode) written by a fresh process whose umask is ``mask``."""
    import subprocess
    import sys

    code = (f"import os, stat; os.umask({mask}); from dpmesh_infer import atomic; "
            f"p = atomic.write_text({str(folder / 'file')!r}, 'x'); d = atomic.staging_dir({str(folder / 'dir')!r}); "
            "print(oct(stat.S_IMODE(os.stat(p).st_mode)), oct(stat.S_IMODE(os.stat(d).st_mode)))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


@pytest.mark.parametrize("mask, expected", [(0o022, ["0o644", "0o755"]), (0o077, ["0o600", "0o700"]),
                                            (0o002, ["0o664", "0o775"])])
def test_umask_is_respected(tmp_path, mask, expected):
    assert _modes_under_umask(mask, tmp_path) == expected


def test_streaming_file_commit_and_discard(tmp_path):
    f = atomic.AtomicFile(tmp_path / "lines.jsonl", "w")
    f.file.write("a\n")
    assert not (tmp_path / "lines.jsonl").exists()
    f.commit()
    assert (tmp_path / "lines.jsonl").read_text() == "a\n"
    g = atomic.AtomicFile(tmp_path / "lines.jsonl", "w")
    g.file.write("b\n")
    g.discard()
    assert (tmp_path / "lines.jsonl").read_text() == "a\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["lines.jsonl"]


def test_sync_files_is_one_syncfs_or_an_fsync_per_file_and_folder(tmp_path, monkeypatch):
    a = atomic.write_bytes(tmp_path / "x" / "a.bin", b"a", fsync=False)
    b = atomic.write_bytes(tmp_path / "y" / "b.bin", b"b", fsync=False)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    if sys.platform.startswith("linux"):
        assert atomic._libc_syncfs() is not None  # the process's libc has syncfs
        atomic.sync_files([a, b], tmp_path)
        assert synced == []  # one syncfs, no fsync
    # without syncfs: each file, then each folder holding one; a missing path is skipped
    monkeypatch.setattr(atomic, "_libc_syncfs", lambda: None)
    atomic.sync_files([a, b, tmp_path / "x" / "gone.bin"], tmp_path)
    assert len(synced) == 4
    assert a.read_bytes() == b"a" and b.read_bytes() == b"b"


def test_replace_dir_swaps_complete_folders(tmp_path):
    final = tmp_path / "out"
    s1 = atomic.staging_dir(final)
    (s1 / "v").write_text("1")
    atomic.replace_dir(s1, final)
    s2 = atomic.staging_dir(final)
    (s2 / "v").write_text("2")
    atomic.replace_dir(s2, final)
    assert (final / "v").read_text() == "2"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out"]


def test_layout_lists_every_file_and_its_fix(tmp_path):
    files = layout.required_files()
    assert files[0] == "pipeline.json" and files[-1] == "smpl/SMPL_NEUTRAL.npz"
    assert len(files) == 1 + 2 * len(layout.COMPONENTS) + 1
    assert "unet_lora/adapter_model.safetensors" in files and "vae/diffusion_pytorch_model.safetensors" in files
    assert layout.missing_files(tmp_path) == files
    assert layout.fix_command("smpl/SMPL_NEUTRAL.npz", tmp_path) == layout.FIX_SMPL.format(dir=tmp_path)
    assert layout.fix_command("unet/config.json", tmp_path) == layout.FIX_CONVERT.format(dir=tmp_path)
    msg = layout.missing_message(tmp_path, "--weights", ["unet/config.json", "smpl/SMPL_NEUTRAL.npz"], ["here"])
    assert msg.count("convert-official") == 1 and msg.count("import-smpl") == 1 and "looked in: here" in msg


def test_write_weights_dir_is_checked_and_atomic(tiny_weights, tmp_path):
    import shutil

    def copy_all(dst):
        shutil.copytree(tiny_weights, dst, dirs_exist_ok=True)

    out = layout.write_weights_dir(tmp_path / "w", copy_all)
    assert layout.missing_files(out) == []

    def incomplete(dst):
        copy_all(dst)
        (dst / "regressor" / "model.safetensors").unlink()

    with pytest.raises(WeightsError, match="left out regressor/model.safetensors"):
        layout.write_weights_dir(out, incomplete)
    assert layout.missing_files(out) == []  # the old, complete directory is still there
    with pytest.raises(InputError, match="not empty"):
        layout.write_weights_dir(out, copy_all, overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w"]  # no staging folders left
