"""`dpmesh train dpmesh` under `accelerate launch` with 2 CPU processes (torch.distributed, gloo).

What is checked, on the tiny synthetic set (global batch 4: 2 persons per process):

- 2 processes x 2 persons train as 1 process x 4 persons: the logged step losses agree to 1e-5
  (relative) and the weight updates to 1e-2 of their norm (see ``_update_error`` for why weights are
  compared through the update, not element-wise);
- only the main process writes: one log line per step, one summary on stdout, every checkpoint folder
  holds exactly state.pt + one rng file per rank + manifest.json (nothing partial, nothing twice);
- a 2-process run stopped after step 3 (``--stop-after``, inside the student stage) and resumed is
  bit-identical to the uninterrupted 2-process run.

The regressor's dropout is set to 0 in the initial weights: dropout masks are drawn from each process's
own RNG stream, so with dropout the runs would agree only statistically.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dpmesh_infer.models.io import read_safetensors
from dpmesh_infer.train.config import DataConfig, DatasetSpec, InitConfig, OptimConfig, StageConfig, TrainConfig
from dpmesh_infer.train.trainer import train_dpmesh

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(config, config file, initial weights dir): tiny weights with dropout 0, 6 synthetic images."""
    from dpmesh_infer.data.synthetic import generate_synthetic_dataset
    from dpmesh_infer.stand_ins.tiny import build_tiny_weights

    root = tmp_path_factory.mktemp("dist")
    data = generate_synthetic_dataset(root / "data", splits={"train": 6, "test": 2}, persons_per_image=(1, 2),
                                      image_size=(192, 144), seed=3)
    weights = build_tiny_weights(root / "weights", seed=0)
    reg_cfg = weights / "regressor" / "config.json"
    d = json.loads(reg_cfg.read_text())
    assert d["dropout"] > 0
    reg_cfg.write_text(json.dumps({**d, "dropout": 0.0}))
    stages = (StageConfig(name="teacher", epochs=1, final_lr_epochs=0, max_steps_per_epoch=2),
              StageConfig(name="student", epochs=1, final_lr_epochs=0, max_steps_per_epoch=2))
    cfg = TrainConfig(data=DataConfig(train=(DatasetSpec(path=str(data)),), num_workers=0),
                      init=InitConfig(weights=str(weights), pose_head="vposer"), stages=stages,
                      optim=OptimConfig(batch_size=4, lr=1e-3, lr_final=1e-4), checkpoint_every=1, log_every=1)
    path = root / "train.json"
    path.write_text(json.dumps(cfg.to_dict(), indent=1))
    return cfg, path, weights


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """accelerate launch with 2 CPU processes (accelerate's `--cpu` would start one: its CPU multi-process
    mode needs mpirun; `--multi_gpu` uses torchrun, and without CUDA torch.distributed runs on gloo)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("RANK", None)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
           "-m", "dpmesh_infer.cli", "train", "dpmesh", *args, "--device", "cpu", "-q"]
    r = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def _log(run: Path) -> list[dict]:
    recs = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    for r in recs:
        r.pop("samples_per_s", None)
    return recs


def _update_error(w0: Path, a: Path, b: Path) -> float:
    """||Δa − Δb|| / ||Δa|| over every tensor, Δ = trained − initial weights.

    Why not element-wise: AdamW divides each gradient component by its own running RMS, so a component
    whose exact gradient is ~0 (e.g. attention key biases, to which softmax is invariant) turns
    floating-point noise into a step of ±lr — different summation orders (one batch of 4 vs an
    all-reduce of two batches of 2) then differ by up to ~lr there. Measured here: 2e-4 to 5e-4 of
    the update norm; the per-process loss means of the previous trainer gave 0.2 to 0.3.
    """
    num = den = 0.0
    for rel in sorted(p.relative_to(a) for p in a.rglob("*.safetensors")):
        t0, ta, tb = read_safetensors(w0 / rel), read_safetensors(a / rel), read_safetensors(b / rel)
        for k in ta:
            da, db = ta[k].double() - t0[k].double(), tb[k].double() - t0[k].double()
            num += float((da - db).square().sum())
            den += float(da.square().sum())
    assert den > 0  # it trained
    return (num / den) ** 0.5


def _bit_identical(a: Path, b: Path) -> list[str]:
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    return [str(rel) for rel in files
            if any(not torch.equal(x, y) for x, y in zip(read_safetensors(a / rel).values(),
                                                           read_safetensors(b / rel).values()))]


def test_two_processes_equal_one_process_with_the_global_batch_and_resume_exactly(setup, tmp_path):
    cfg, cfg_path, w0 = setup
    one = train_dpmesh(cfg, tmp_path / "one", device="cpu")
    assert one.steps == 4

    r = _launch(tmp_path, "--config", str(cfg_path), "--out", str(tmp_path / "two"))
    two = tmp_path / "two"
    assert r.stdout.count("trained 4 steps") == 1, r.stdout  # the summary is printed by the main process only

    # one log, written once: one record per step / epoch / export, started by 2 processes
    log2 = _log(two)
    assert [x["event"] for x in log2].count("start") == 1 and log2[0]["processes"] == 2
    assert [x["step"] for x in log2 if x["event"] == "step"] == [1, 2, 3, 4]
    assert [x["stage"] for x in log2 if x["event"] == "export"] == ["teacher", "student"]

    # the same training as one process with the whole batch: losses (global-batch values) and updates
    steps1 = [x for x in _log(tmp_path / "one") if x["event"] == "step"]
    steps2 = [x for x in log2 if x["event"] == "step"]
    for x, y in zip(steps1, steps2):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float):
                assert y[k] == pytest.approx(x[k], rel=1e-5, abs=1e-7), (x["step"], k)
    for stage in ("teacher", "student"):
        err = _update_error(w0, tmp_path / "one" / stage, two / stage)
        assert err < 1e-2, (stage, err)

    # checkpoints: complete folders only, each with every rank's RNG state once
    ckpt = two / "checkpoints"
    folders = sorted(p for p in ckpt.iterdir() if p.is_dir())
    assert len(folders) == cfg.keep_checkpoints
    assert sorted(p.name for p in ckpt.iterdir() if not p.is_dir()) == ["latest"]
    for f in folders:
        assert not f.name.endswith((".tmp", ".old"))
        assert sorted(p.name for p in f.iterdir()) == ["manifest.json", "rng-rank0.pt", "rng-rank1.pt", "state.pt"]
        assert sorted(json.loads((f / "manifest.json").read_text())["files"]) == \
            ["rng-rank0.pt", "rng-rank1.pt", "state.pt"]
        rngs = [torch.load(f / f"rng-rank{i}.pt", weights_only=True)["cpu"] for i in (0, 1)]
        assert not torch.equal(*rngs)  # each process's own state, not rank 0's twice
        assert torch.load(f / "state.pt", weights_only=True)["world"] == 2

    # stopped after step 3 (inside the student stage), resumed: bit-identical to the straight run
    three = tmp_path / "three"
    r = _launch(tmp_path, "--config", str(cfg_path), "--out", str(three), "--stop-after", "3")
    assert r.stdout.count("stopped after step 3") == 1, r.stdout
    assert not (three / "student").exists()
    assert (three / "checkpoints" / "latest").read_text().startswith("step-000000003")
    r = _launch(tmp_path, "--config", str(cfg_path), "--out", str(three), "--resume")
    assert r.stdout.count("trained 4 steps") == 1, r.stdout
    for stage in ("teacher", "student"):
        assert _bit_identical(two / stage, three / stage) == [], stage
    def same(recs):  # without the start record and the export paths (other run folders)
        return [{k: v for k, v in x.items() if k != "path"} for x in recs if x["event"] != "start"]

    assert same(_log(three)) == same(log2)
    assert [x["step"] for x in _log(three) if x["event"] == "step"] == [1, 2, 3, 4]


def test_loss_shares_of_two_half_batches_add_up_to_the_whole_batch(setup):
    """The reduction the trainer relies on, in one process: with the whole batch's weight sums as
    denominators the shares of two halves add up to the whole batch's losses (plain means of the halves
    would not: their masks differ); SimCLR over the gathered halves, with the gradient on one half only,
    is the whole batch's SimCLR and gives that half its gradient."""
    from types import SimpleNamespace

    from dpmesh_infer.geometry.crops import PreprocessConfig
    from dpmesh_infer.train.augment import AugmentConfig
    from dpmesh_infer.train.data import PersonIndex, TrainSamples, collate_samples
    from dpmesh_infer.train.losses import nkr_terms, supervised_losses, supervised_weights

    index = PersonIndex(setup[0].data.train, PreprocessConfig())
    samples = TrainSamples(index, AugmentConfig(), PreprocessConfig())
    batch = collate_samples([samples[(i, 100 + i)] for i in range(4)])
    g = torch.Generator().manual_seed(0)
    out = {"joints_proj": torch.rand(4, 30, 2, generator=g) * 256, "joint_img": torch.rand(4, 15, 3, generator=g),
           "joints_rel": torch.randn(4, 30, 3, generator=g) * 0.3, "global_orient": torch.randn(4, 3, generator=g),
           "body_pose": torch.randn(4, 69, generator=g) * 0.2, "betas": torch.randn(4, 10, generator=g)}
    gt = torch.randn(4, 30, 3, generator=g) * 0.3
    halves = (slice(0, 2), slice(2, 4))

    def part(d, s):
        return {k: v[s] for k, v in d.items()}

    full = supervised_losses(SimpleNamespace(**out), batch, gt)
    den = {k: sum(supervised_weights(part(batch, s))[k].sum() for s in halves) for k in supervised_weights(batch)}
    shares = [supervised_losses(SimpleNamespace(**part(out, s)), part(batch, s), gt[s], den) for s in halves]
    means = [supervised_losses(SimpleNamespace(**part(out, s)), part(batch, s), gt[s]) for s in halves]
    for k in full:
        assert float(shares[0][k] + shares[1][k]) == pytest.approx(float(full[k]), rel=1e-6), k
    assert any(abs(float(means[0][k] + means[1][k]) / 2 - float(full[k])) > 1e-3 * float(full[k]) for k in full)

    feats = torch.randn(4, 8, 4, 4, generator=g, requires_grad=True)
    teacher = torch.randn(4, 8, 4, 4, generator=g)
    whole_sim, whole_mse = nkr_terms(feats, teacher, 0.1)
    (grad_whole,) = torch.autograd.grad(whole_sim, feats)
    pooled = [torch.nn.functional.normalize(x.mean(dim=(2, 3)), dim=1) for x in (feats.detach(), teacher)]
    other = iter([pooled[0][2:], pooled[1][2:]])  # what rank 1 contributes, in call order (student, teacher)
    sim0, mse0 = nkr_terms(feats[:2], teacher[:2], 0.1, gather=lambda x: torch.cat([x, next(other)]),
                           mse_count=4 * 8 * 16)
    (grad0,) = torch.autograd.grad(sim0, feats)
    assert float(sim0.detach()) == pytest.approx(float(whole_sim.detach()), rel=1e-6)
    assert torch.allclose(grad0[:2], grad_whole[:2], rtol=1e-5, atol=1e-8) and not grad0[2:].any()
    mse1 = nkr_terms(feats[2:], teacher[2:], 0.1, mse_count=4 * 8 * 16)[1]
    assert float((mse0 + mse1).detach()) == pytest.approx(float(whole_mse.detach()), rel=1e-6)
