"""`dpmesh train dpmesh` on the synthetic dataset with tiny models: learning, exact resume, export, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dpmesh_infer.cli import app
from dpmesh_infer.models.io import read_safetensors
from dpmesh_infer.train.augment import AugmentConfig
from dpmesh_infer.train.config import DataConfig, DatasetSpec, InitConfig, OptimConfig, StageConfig, TrainConfig
from dpmesh_infer.train.trainer import train_dpmesh

runner = CliRunner()


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """(dataset dir, synthetic SMPL dir): 6 images of 1-2 people, 192x144."""
    from dpmesh_infer.data.synthetic import generate_synthetic_dataset
    from dpmesh_infer.stand_ins.smpl import write_synthetic_h36m_regressor, write_synthetic_smpl_npz

    root = tmp_path_factory.mktemp("train_synth")
    data = generate_synthetic_dataset(root / "data", splits={"train": 6, "test": 2}, persons_per_image=(1, 2),
                                      image_size=(192, 144), seed=3)
    smpl = root / "smpl"
    npz = write_synthetic_smpl_npz(smpl)
    write_synthetic_h36m_regressor(npz.parent)
    return data, smpl


def _config(synth, *, stages, batch=2, lr=1e-3, augment=None, val=False, **kw) -> TrainConfig:
    data, smpl = synth
    return TrainConfig(data=DataConfig(train=(DatasetSpec(path=str(data)),), num_workers=0,
                                       val=DatasetSpec(path=str(data), split="test") if val else None),
                       init=InitConfig(tiny=True, smpl=str(smpl)), stages=stages,
                       optim=OptimConfig(batch_size=batch, lr=lr, lr_final=lr / 10),
                       augment=augment or AugmentConfig(), **kw)


def _records(run, event="step"):
    out = []
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["event"] == event:
            rec.pop("samples_per_s", None)
            out.append(rec)
    return out


def _weights_equal(a, b) -> list[str]:
    """Names of safetensors files under a and b whose tensors differ (empty = bit-identical)."""
    diff = []
    files = sorted(p.relative_to(a) for p in a.rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(b) for p in b.rglob("*.safetensors"))
    for rel in files:
        ta, tb = read_safetensors(a / rel), read_safetensors(b / rel)
        if ta.keys() != tb.keys() or any(not torch.equal(ta[k], tb[k]) for k in ta):
            diff.append(str(rel))
    return diff


class _Stop(KeyboardInterrupt):
    pass


def test_interrupted_and_resumed_run_equals_uninterrupted_run(synth, tmp_path):
    """Crash after step 3 (end of the teacher stage, last checkpoint at step 2) and after step 5 (inside
    the student stage, last checkpoint at step 4): the resumed run is bit-identical to a straight one."""
    stages = (StageConfig(name="teacher", epochs=1, final_lr_epochs=0, max_steps_per_epoch=3),
              StageConfig(name="student", epochs=1, final_lr_epochs=0, max_steps_per_epoch=3))
    cfg = _config(synth, stages=stages, checkpoint_every=2, log_every=1, val=True)
    straight = train_dpmesh(cfg, tmp_path / "a", device="cpu")
    assert straight.steps == 6 and set(straight.exports) == {"teacher", "student"}

    def crash_at(step):
        def on_step(s):
            if s == step:
                raise _Stop()
        return on_step

    run = tmp_path / "b"
    with pytest.raises(_Stop):
        train_dpmesh(cfg, run, device="cpu", on_step=crash_at(3))
    assert (run / "checkpoints" / "latest").read_text().startswith("step-000000002")
    with pytest.raises(_Stop):
        train_dpmesh(cfg, run, device="cpu", resume=True, on_step=crash_at(5))
    assert (run / "checkpoints" / "latest").read_text().startswith("step-000000004")
    again = train_dpmesh(cfg, run, device="cpu", resume=True, stop_after=3)  # already past it: no step
    assert again.steps == 4 and not again.finished
    assert (run / "checkpoints" / "latest").read_text().startswith("step-000000004")
    resumed = train_dpmesh(cfg, run, device="cpu", resume=True)
    assert resumed.steps == 6
    assert _weights_equal(straight.exports["teacher"], resumed.exports["teacher"]) == []
    assert _weights_equal(straight.weights_dir, resumed.weights_dir) == []
    assert _records(tmp_path / "a") == _records(run)
    assert [r["step"] for r in _records(run)] == [1, 2, 3, 4, 5, 6]
    assert _records(tmp_path / "a", "epoch") == _records(run, "epoch")
    # validation metrics at every epoch end, identical after the interruptions
    evals = _records(run, "eval")
    assert evals == _records(tmp_path / "a", "eval") and [e["step"] for e in evals] == [3, 6]
    row = next(r for r in evals[-1]["rows"] if r["subset"] is None)
    assert row["split"] == "test" and row["evaluated"] > 0 and row["mpjpe"] > 0
    # the student stage really trained with NKR, the teacher stage without
    recs = _records(run)
    assert all("lnkr" not in r for r in recs[:3]) and all(r["lnkr"] > 0 for r in recs[3:])
    # checkpoints load without unpickling arbitrary objects, and only `keep_checkpoints` are kept
    ckpts = sorted(p for p in (run / "checkpoints").iterdir() if p.is_dir())
    assert len(ckpts) == cfg.keep_checkpoints and not any(p.name.endswith(".tmp") for p in ckpts)
    torch.load(ckpts[-1] / "state.pt", weights_only=True)

    # the exported student is a complete inference weights directory
    from dpmesh_infer import Pipeline
    from dpmesh_infer.data.format import Dataset

    ds = Dataset(synth[0])
    rec = ds.records("train")[0]
    pipe = Pipeline.from_pretrained(resumed.weights_dir, device="cpu")
    res = pipe(str(ds.image_path(rec)), keypoints=np.stack([p.keypoints_2d for p in rec.persons]))
    assert len(res.images[0].persons) == len(rec.persons)
    assert np.isfinite(res.images[0].persons[0].vertices).all()
    assert "dpmesh train" in pipe.config.source

    # resuming with a different configuration is refused, naming the difference
    other = dataclasses.replace(cfg, seed=1)
    from dpmesh_infer.errors import InputError

    with pytest.raises(InputError, match="seed"):
        train_dpmesh(other, run, device="cpu", resume=True)
    with pytest.raises(InputError, match="--resume"):
        train_dpmesh(cfg, run, device="cpu")


def test_training_reduces_the_loss(synth, tmp_path):
    """Teacher training on the synthetic set: the loss of the last steps is well below the first ones."""
    no_aug = AugmentConfig(scale_factor=0.0, rot_prob=0.0, flip_prob=0.0, color_factor=0.0, occlusion_prob=0.0,
                           bbox_scale_range=(1.1, 1.1))
    stages = (StageConfig(name="teacher", epochs=25, final_lr_epochs=0),)
    cfg = _config(synth, stages=stages, batch=2, lr=2e-3, augment=no_aug, log_every=1, checkpoint_every=10_000)
    result = train_dpmesh(cfg, tmp_path / "run", device="cpu")
    losses = [r["loss"] for r in _records(tmp_path / "run")]
    assert result.steps == len(losses) >= 100
    first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
    assert last < 0.5 * first, (first, last)
    parts = _records(tmp_path / "run")
    for key in ("l2d", "l3d", "lsmpl"):
        assert np.mean([r[key] for r in parts[-10:]]) < np.mean([r[key] for r in parts[:10]]), key


def test_cli_config_train_resume(synth, tmp_path):
    data, smpl = synth
    cfg = tmp_path / "train.json"
    r = runner.invoke(app, ["train", "config", "--tiny", "--data", str(data), "--smpl", str(smpl), "--out", str(cfg),
                            "--steps-per-epoch", "1"])
    assert r.exit_code == 0, r.output
    d = json.loads(cfg.read_text())
    assert d["loss"] == {"w_2d": 5.0, "w_3d": 2.0, "w_smpl": 1.0, "w_nkr": 0.1, "simclr_temperature": 0.1}
    run = tmp_path / "run"
    r = runner.invoke(app, ["train", "dpmesh", "--config", str(cfg), "--out", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output  # with the progress bar
    assert "student" in r.output and (run / "student" / "pipeline.json").is_file()
    assert [json.loads(x)["event"] for x in (run / "log.jsonl").read_text().splitlines()].count("export") == 2
    r = runner.invoke(app, ["train", "dpmesh", "--config", str(cfg), "--out", str(run), "--device", "cpu", "-q"])
    assert r.exit_code == 2 and "--resume" in r.output
    r = runner.invoke(app, ["train", "dpmesh", "--config", str(cfg), "--out", str(run), "--device", "cpu", "-q",
                            "--resume"])
    assert r.exit_code == 0, r.output  # a finished run resumes to its end at once

    # the paper defaults are what a full template holds
    full = tmp_path / "full.json"
    r = runner.invoke(app, ["train", "config", "--data", str(data), "--smpl", str(smpl), "--out", str(full)])
    assert r.exit_code == 0, r.output
    f = TrainConfig.load_json(full)
    assert (f.optim.batch_size, f.optim.lr, f.optim.lr_final, f.optim.weight_decay) == (16, 1e-4, 1e-5, 1e-6)
    assert [(s.name, s.epochs, s.final_lr_epochs) for s in f.stages] == [("teacher", 10, 5), ("student", 30, 5)]
    assert f.train_controlnet and f.init.pose_head == "vqvae"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**d, "optimiser": {}}))
    r = runner.invoke(app, ["train", "dpmesh", "--config", str(bad), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "optimiser" in r.output
    d["data"]["train"][0]["path"] = str(tmp_path / "nowhere")
    bad.write_text(json.dumps(d))
    r = runner.invoke(app, ["train", "dpmesh", "--config", str(bad), "--out", str(tmp_path / "y")])
    assert r.exit_code == 2 and "nowhere" in r.output


def test_fine_tune_release_style_weights_with_a_student_stage(synth, tiny_weights, tmp_path):
    """init.weights (VPoser head, as converted release checkpoints): the student's teacher is those weights."""
    data, _ = synth
    cfg_path = tmp_path / "ft.json"
    r = runner.invoke(app, ["train", "config", "--weights", str(tiny_weights), "--data", str(data),
                            "--out", str(cfg_path), "--steps-per-epoch", "2"])
    assert r.exit_code == 0, r.output
    d = json.loads(cfg_path.read_text())
    assert d["init"]["pose_head"] == "vposer" and [s["name"] for s in d["stages"]] == ["student"]
    d["stages"][0].update(epochs=1, final_lr_epochs=0)
    d["optim"]["batch_size"] = 2
    d["data"]["num_workers"] = 0
    cfg = TrainConfig.from_dict(d)
    result = train_dpmesh(cfg, tmp_path / "run", device="cpu")
    assert result.steps == 2 and set(result.exports) == {"student"}
    before, after = read_safetensors(tiny_weights / "regressor" / "model.safetensors"), \
        read_safetensors(result.weights_dir / "regressor" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)  # it trained
    assert all(torch.equal(a, b) for a, b in zip(read_safetensors(tiny_weights / "vae" /
               "diffusion_pytorch_model.safetensors").values(), read_safetensors(
               result.weights_dir / "vae" / "diffusion_pytorch_model.safetensors").values()))  # VAE frozen
    assert all(r["lnkr"] >= 0 for r in _records(tmp_path / "run"))
    bad = TrainConfig.from_dict({**d, "init": {**d["init"], "pose_head": "vqvae"}})
    from dpmesh_infer.errors import ConfigError

    with pytest.raises(ConfigError, match="pose_head"):
        train_dpmesh(bad, tmp_path / "run2", device="cpu")
    assert not (tmp_path / "run2" / "train_config.json").exists()  # a failed start leaves no run behind
    # validation without an H36M regressor fails before any training, naming the file
    from dpmesh_infer.errors import WeightsError

    no_reg = TrainConfig.from_dict({**d, "data": {**d["data"], "val": {"path": str(data), "split": "test"},
                                                  "h36m_regressor": str(tmp_path / "nope.npy")}})
    with pytest.raises(WeightsError, match="nope.npy"):
        train_dpmesh(no_reg, tmp_path / "run3", device="cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_mixed_precision_with_gradient_checkpointing(synth, tmp_path, precision):
    stages = (StageConfig(name="teacher", epochs=1, final_lr_epochs=0, max_steps_per_epoch=3),
              StageConfig(name="student", epochs=1, final_lr_epochs=0, max_steps_per_epoch=3))
    cfg = _config(synth, stages=stages, log_every=1, mixed_precision=precision, gradient_checkpointing=True)
    result = train_dpmesh(cfg, tmp_path / "run", device="auto")
    recs = _records(tmp_path / "run")
    assert result.steps == 6 and all(np.isfinite(r["loss"]) for r in recs)
    start = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])
    assert start["device"].startswith("cuda")
    from dpmesh_infer import Pipeline

    Pipeline.from_pretrained(result.weights_dir, device="cuda")


def test_batches_do_not_depend_on_workers_or_processes(synth):
    """The data a step sees is fixed by (seed, stage, epoch, step): the same with 0 or 2 loader workers,
    and the per-process slices of 2 processes together are the single-process batch."""
    from dpmesh_infer.geometry.crops import PreprocessConfig
    from dpmesh_infer.train.data import PersonIndex, TrainSamples, collate_samples, step_batches

    index = PersonIndex((DatasetSpec(path=str(synth[0])),), PreprocessConfig())
    samples = TrainSamples(index, AugmentConfig(), PreprocessConfig())
    n = len(index)

    def batches(rank, world, workers, start=0):
        plan = [mb for step in step_batches(n, seed=4, stage=1, epoch=2, batch_size=4, rank=rank, world=world,
                                            micro_batches=1, start_step=start) for mb in step]
        loader = torch.utils.data.DataLoader(samples, batch_sampler=plan, num_workers=workers,
                                             collate_fn=collate_samples)
        return plan, list(loader)

    plan0, b0 = batches(0, 1, 0)
    plan2, b2 = batches(0, 1, 2)
    assert plan0 == plan2 and len(b0) == n // 4
    for x, y in zip(b0, b2):
        assert all(torch.equal(x[k], y[k]) for k in x)
    r0, _ = batches(0, 2, 0)
    r1, _ = batches(1, 2, 0)
    assert [a + b for a, b in zip(r0, r1)] == plan0
    later, _ = batches(0, 1, 0, start=1)
    assert later == plan0[1:]  # resuming at step 1 continues the same order
    other = step_batches(n, seed=4, stage=1, epoch=3, batch_size=4, rank=0, world=1, micro_batches=1, start_step=0)
    assert [mb for step in other for mb in step] != plan0  # another epoch, another order
