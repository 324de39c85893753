"""Throughput of dpmesh_infer, everything important in one run (not a test; prints tables with ratios).

Usage:
    python benchmarks/bench_throughput.py                                   # CPU, tiny networks: minutes
    python benchmarks/bench_throughput.py --size full --device cuda         # one GPU: <= 10 minutes
    python benchmarks/bench_throughput.py --sections folder host            # only some sections
    python benchmarks/bench_throughput.py --size full --device cuda --compile --json bench.json

Networks are random-init (speed does not depend on the weights): the full SD-1.5 ControlNet/UNet/VAE
sizes with ``--size full``, the test suite's tiny configs with ``--size tiny``. Sections:

networks  eager fp32 batch 1 with every fast-path switch off (the upstream-style baseline) against the
          fast path (the device's defaults: on CUDA fp16 without autocast, merged LoRA, channels_last,
          cudnn.benchmark; ``--compile`` adds torch.compile rows) at batch 1/16/64: persons/s, speed-up,
          MFU = persons/s x GFLOP/person / peak (GFLOP counted by torch's FlopCounterMode; peak: the
          GPU's dense fp16 tensor rate from a table, or ``--peak-tflops``; on the CPU a measured fp32
          GEMM rate), peak device memory (reset per row), host enqueue time vs device time.
overhead  one person, one photo: the whole ``Pipeline.__call__`` (decode-free: the image is an array; keypoints
          to joints, crop, heatmaps, the networks, SMPL, placement, results) against the composed model's
          forward alone on the same crop (what the upstream code times), same weights and dtype.
stages    fractions of one fast-path batch: VAE encoder, ControlNet, UNet, merge, regressor, pose
          decoder, SMPL, the rest (heatmaps, cameras, copies).
ablation  one row per switch (the fast path with that switch off; on the CPU, where they are off by
          default, the plain path with it on): persons/s and max vertex error vs the fp32 plain path.
e2e       ``Pipeline.__call__`` on 16 synthetic 1280x720 JPEG crowd photos with 10 people each:
          images/s, persons/s, fractions decode+crop / copies / forward / results.
folder    a folder run (``BatchRunner``: prepare thread, networks, writer threads, one sync per chunk) of
          32 such photos with a keypoint file: persons/s, the manifest's seconds per person per stage,
          the write fraction.
host      the host cost per person of a folder run with the default outputs (decode, crop, heatmaps are
          on the device, copies, every file written and synced), on one thread: the writers before this
          benchmark existed (trimesh OBJ and GLB, an fsync per file) against the current ones, same run.
detector  rtmo-l (random-init from mmpose's config when no ``--weights``) at batch 1 and 8 on the
          photos: ms/image (needs the mmpose stack; skipped with the reason otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SECTIONS = ("networks", "overhead", "stages", "ablation", "e2e", "folder", "host", "detector")
#: dense fp16/bf16 tensor-core peak, TFLOP/s (vendor datasheets, SXM parts without sparsity)
PEAK_FP16_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0, "A10": 125.0,
                    "4090": 165.2, "V100": 125.0, "T4": 65.0}
SWITCHES = ("merge_lora", "channels_last", "fp16_without_autocast", "cudnn_benchmark")


# ------------------------------------------------------------------------------------------ helpers

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def table(title: str, header: list[str], rows: list[list], note: str | None = None) -> None:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n### {title}\n")
    for k, r in enumerate(cells):
        print("| " + " | ".join(c.rjust(w) if k else c.ljust(w) for c, w in zip(r, widths)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if note:
        print(f"\n{note}")
    sys.stdout.flush()


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "n/a"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


class Builder:
    """Random-init components built once on the CPU (seed 0); each pipeline gets fresh modules built on the
    meta device and filled with copies of those weights (``load_state_dict(assign=True)``), so every row
    runs the same weights and no row's switches (merged LoRA mutates the UNet) leak into another."""

    def __init__(self, size: str) -> None:
        from dpmesh_infer.models import sd15
        from dpmesh_infer.models.backbone import BackboneConfig, DiffusionBackbone
        from dpmesh_infer.models.pose_decoders import PoseDecoderConfig, build_pose_decoder
        from dpmesh_infer.models.regressor import Regressor, RegressorConfig
        from dpmesh_infer.stand_ins.smpl import make_synthetic_smpl_arrays
        from dpmesh_infer.stand_ins.tiny import tiny_configs

        torch.manual_seed(0)
        if size == "tiny":
            b_cfg, r_cfg, d_cfg, unet, cn, vae = tiny_configs()
        else:
            b_cfg, r_cfg, d_cfg = BackboneConfig(), RegressorConfig(), PoseDecoderConfig()
            unet, cn, vae = sd15.unet_config(), sd15.controlnet_config(), sd15.vae_config()
        self.factories = {"backbone": lambda: DiffusionBackbone.build(b_cfg, unet, cn, vae),
                          "regressor": lambda: Regressor(r_cfg), "pose_decoder": lambda: build_pose_decoder(d_cfg)}
        self.states = {k: make().state_dict() for k, make in self.factories.items()}
        self.smpl = make_synthetic_smpl_arrays()

    def _component(self, name: str):
        with torch.device("meta"):
            module = self.factories[name]()
        module.load_state_dict({k: v.clone() for k, v in self.states[name].items()}, assign=True)
        left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        if left:  # a buffer outside the state dict: build it for real (same seed, same weights)
            torch.manual_seed(0)
            module = self.factories[name]()
            module.load_state_dict(self.states[name])
        return module

    def pipeline(self, device, dtype=None, runtime=None):
        from dpmesh_infer.models.body import SMPLBody
        from dpmesh_infer.models.dpmesh import PipelineConfig
        from dpmesh_infer.pipeline import Pipeline

        parts = {name: self._component(name) for name in self.factories}
        return Pipeline(config=PipelineConfig(untrained=True), device=device, dtype=dtype, runtime=runtime,
                        body=SMPLBody(self.smpl), **parts)


def crowd_persons(pipe, n: int):
    """``n`` preprocessed persons from synthetic 1280x720 crowd photos (cycled), focal and principal."""
    from dpmesh_infer.stand_ins.scene import synthetic_crowd

    image, kp = synthetic_crowd()
    prepared = pipe.prepare(image, kp)
    persons = [prepared.persons[i % len(prepared.persons)] for i in range(n)]
    K = prepared.results[0].K
    return persons, torch.full((n,), float(K[0, 0])), torch.tensor([[float(K[0, 2]), float(K[1, 2])]] * n)


def gflop_per_person(pipe) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    persons, f, pp = crowd_persons(pipe, 1)
    counter = FlopCounterMode(display=False)
    with counter:
        pipe.forward_persons(persons, focal=f, principal=pp)
    return counter.get_total_flops() / 1e9


def peak_tflops(device: torch.device, override: float | None) -> tuple[float, str]:
    if override:
        return override, "--peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tf in PEAK_FP16_TFLOPS.items():
            if key in name:
                return tf, f"{name} dense fp16 datasheet"
        return float("nan"), f"{name}: unknown peak (pass --peak-tflops)"
    best = 0.0
    for n in (1024, 2048, 3072):  # the best of a few sizes: small GEMMs understate what the CPU sustains
        a = torch.randn(n, n)
        best = max(best, 2 * n ** 3 / median_time(lambda: a @ a, device, 1, 3) / 1e12)
    return best, "best measured fp32 GEMM (1024-3072 square) on this CPU"


def max_memory(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")


def reset_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _size(text: str) -> tuple[int, int]:
    """"WxH" -> (W, H) pixels."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 640x480), got {text!r}") from None
    if w < 64 or h < 64:
        raise argparse.ArgumentTypeError(f"photos must be at least 64x64, got {text!r}")
    return w, h


def write_photos(folder: Path, n: int, people: int, size: tuple[int, int] = (1280, 720)
                 ) -> tuple[list[Path], list[np.ndarray], Path]:
    """``n`` synthetic crowd JPEGs (``size`` W x H, quality 90), their COCO-17 keypoints and a keypoint file."""
    from PIL import Image

    from dpmesh_infer.stand_ins.scene import synthetic_crowd

    folder.mkdir(parents=True, exist_ok=True)
    paths, kps, entries = [], [], []
    for i in range(n):
        image, kp = synthetic_crowd(*size, people=people, seed=i)
        path = folder / f"crowd_{i:03d}.jpg"
        Image.fromarray(image).save(path, quality=90)
        paths.append(path)
        kps.append(kp)
        entries += [{"file_name": path.name, "keypoints": k.reshape(-1).tolist(), "score": 0.9} for k in kp]
    kp_file = folder.parent / f"{folder.name}_keypoints.json"
    kp_file.write_text(json.dumps(entries))
    return paths, kps, kp_file


# ------------------------------------------------------------------------------------------ sections

def section_networks(args, builder, device, results):
    from dpmesh_infer.pipeline import RuntimeOptions

    bs_list = args.batch_sizes
    base = builder.pipeline(device, torch.float32, RuntimeOptions.plain())
    gflop = gflop_per_person(base)
    peak, peak_src = peak_tflops(device, args.peak_tflops)
    rows, raw = [], []

    def measure(pipe, bs, label):
        persons, f, pp = crowd_persons(pipe, bs)
        reset_memory(device)
        warm = args.warmup + (3 if pipe.runtime.compile else 0)
        t = median_time(lambda: pipe.forward_persons(persons, focal=f, principal=pp, pad_to=bs), device, warm,
                        args.repeat)
        enqueue = gpu = float("nan")
        if device.type == "cuda":  # host time to enqueue the batch vs device time of it
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            sync(device)
            t0 = time.perf_counter()
            start.record()
            fields, _ = pipe._forward_device(persons, focal=f, principal=pp, pad_to=bs)
            enqueue = time.perf_counter() - t0
            end.record()
            sync(device)
            gpu = start.elapsed_time(end) / 1e3
            del fields
        pps = bs / t
        row = dict(label=label, batch=bs, ms_batch=t * 1e3, persons_s=pps, mem_gib=max_memory(device),
                   enqueue_ms=enqueue * 1e3, device_ms=gpu * 1e3)
        raw.append(row)
        return row

    baseline = measure(base, 1, "eager fp32, switches off (baseline)")
    del base
    fast = builder.pipeline(device)  # the device's defaults
    fast_rows = [measure(fast, bs, f"fast path {str(fast.dtype).replace('torch.', '')}") for bs in bs_list]
    del fast
    if args.compile:
        comp = builder.pipeline(device, runtime=RuntimeOptions(compile=True, compile_mode=args.compile_mode))
        fast_rows += [measure(comp, bs, f"fast path + compile ({args.compile_mode or 'default'})") for bs in bs_list]
        del comp
    for r in [baseline] + fast_rows:
        rows.append([r["label"], r["batch"], r["ms_batch"], r["persons_s"], r["persons_s"] / baseline["persons_s"],
                     100 * r["persons_s"] * gflop / (peak * 1e3), r["mem_gib"], r["enqueue_ms"], r["device_ms"]])
    table("Networks (forward_persons: collate, copies, VAE+ControlNet+UNet, regressor, pose decoder, SMPL, "
          "placement, one copy back)",
          ["path", "batch", "ms/batch", "persons/s", "speed-up", "MFU %", "peak GiB", "enqueue ms", "device ms"],
          rows, note=f"{gflop:.1f} GFLOP/person (FlopCounterMode); peak {peak:.1f} TFLOP/s ({peak_src}). "
                     "speed-up: over the baseline row. enqueue/device ms: CUDA only."
                     + (" On the CPU, convolutions (oneDNN) can outrun the GEMM peak: MFU may pass 100 %."
                        if device.type == "cpu" else ""))
    results["networks"] = dict(gflop_per_person=gflop, peak_tflops=peak, peak_source=peak_src, rows=raw)


def section_overhead(args, builder, device, results):
    from dpmesh_infer.geometry.crops import collate
    from dpmesh_infer.stand_ins.scene import synthetic_scene

    pipe = builder.pipeline(device)
    image, kp = synthetic_scene()
    kp1 = kp[:1]
    batch = collate(pipe.prepare(image, kp1).persons).to(device)
    focal = pipe.model.model_focal(batch.image_size)
    dtype = pipe.dtype

    def model_forward():
        with torch.inference_mode():
            return pipe.model(batch.images.to(dtype), batch.joints32, batch.mask, focal)

    t_model = median_time(model_forward, device, args.warmup, args.repeat)
    t_call = median_time(lambda: pipe(image, kp1), device, args.warmup, args.repeat)
    table("One person: the whole Pipeline call against the model's forward alone",
          ["path", "ms", "x model forward"],
          [["DPMesh.forward (composed model, the crop ready on the device)", 1e3 * t_model, 1.0],
           ["Pipeline.__call__(image array, keypoints)", 1e3 * t_call, t_call / t_model]],
          note=f"median of {args.repeat} after {args.warmup} warm-up calls, {str(dtype).replace('torch.', '')}")
    results["overhead"] = dict(model_ms=1e3 * t_model, call_ms=1e3 * t_call, ratio=t_call / t_model)


STAGES = (("VAE encoder", lambda m: [m.backbone.vae.encoder] + ([m.backbone.vae.quant_conv]
                                                                if m.backbone.vae.quant_conv is not None else [])),
          ("ControlNet", lambda m: [m.backbone.controlnet]), ("UNet", lambda m: [m.backbone.unet]),
          ("regressor", lambda m: [m.regressor]),
          ("pose decoder", lambda m: [m.pose_decoder]), ("SMPL", lambda m: [m.body]))


def section_stages(args, builder, device, results):
    pipe = builder.pipeline(device)
    bs = args.batch_sizes[-1]
    persons, f, pp = crowd_persons(pipe, bs)
    spans: dict[str, list] = {name: [] for name, _ in STAGES}
    cuda = device.type == "cuda"

    def stamp():
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    spans["merge"] = []
    handles = []
    for name, modules in STAGES:
        for mod in modules(pipe.model):
            box = {}
            handles.append(mod.register_forward_pre_hook(lambda *_, box=box: box.__setitem__("t", stamp())))
            # always_call: the UNet pass ends by an exception at its last feature tap
            handles.append(mod.register_forward_hook(
                lambda *_, box=box, name=name: spans[name].append((box["t"], stamp())), always_call=True))
    adapter = pipe.model.backbone.adapter
    real_merge = adapter.merge

    def timed_merge(*a, **k):  # the merge is a method of the adapter, not its forward
        t = stamp()
        out = real_merge(*a, **k)
        spans["merge"].append((t, stamp()))
        return out

    adapter.merge = timed_merge
    for _ in range(args.warmup):
        pipe.forward_persons(persons, focal=f, principal=pp)
    totals = {name: 0.0 for name in spans}
    wall = 0.0
    for _ in range(args.repeat):
        for v in spans.values():
            v.clear()
        sync(device)
        t0 = time.perf_counter()
        pipe.forward_persons(persons, focal=f, principal=pp)
        sync(device)
        wall += time.perf_counter() - t0
        for name, pairs in spans.items():
            totals[name] += sum((a.elapsed_time(b) / 1e3) if cuda else (b - a) for a, b in pairs)
    for h in handles:
        h.remove()
    del adapter.merge
    order = [name for name, _ in STAGES[:3]] + ["merge"] + [name for name, _ in STAGES[3:]]
    rows = [[name, 1e3 * totals[name] / args.repeat, 100 * totals[name] / wall] for name in order]
    rest = wall - sum(totals.values())
    rows.append(["rest (heatmaps, cameras, copies, Python)", 1e3 * rest / args.repeat, 100 * rest / wall])
    table(f"Stages of one fast-path batch of {bs} ({str(pipe.dtype).replace('torch.', '')})",
          ["stage", "ms/batch", "% of batch"], rows)
    results["stages"] = dict(batch=bs, ms={r[0]: r[1] for r in rows})


def section_ablation(args, builder, device, results):
    from dpmesh_infer.pipeline import RuntimeOptions

    bs = args.ablation_batch or (args.batch_sizes[-1] if device.type == "cuda" else min(args.batch_sizes[-1], 16))
    ref_pipe = builder.pipeline(device, torch.float32, RuntimeOptions.plain())
    persons, f, pp = crowd_persons(ref_pipe, bs)
    ref = ref_pipe.forward_persons(persons, focal=f, principal=pp)["vertices"]
    ref_t = median_time(functools.partial(ref_pipe.forward_persons, persons, focal=f, principal=pp), device,
                        args.warmup, args.repeat)
    del ref_pipe
    cuda = device.type == "cuda"
    defaults = RuntimeOptions().resolved(device, torch.float16 if cuda else torch.float32)
    configs = [("plain fp32 (reference)", torch.float32, RuntimeOptions.plain())]
    if cuda:
        configs.append(("plain fp16 (autocast, live LoRA)", torch.float16, RuntimeOptions.plain()))
        configs.append(("fast path (all defaults)", torch.float16, defaults))
        for s in SWITCHES:
            configs.append((f"fast path without {s}", torch.float16, RuntimeOptions(**{
                **{k: getattr(defaults, k) for k in SWITCHES}, s: False})))
        if args.compile:
            configs.append((f"fast path + compile ({args.compile_mode or 'default'})", torch.float16,
                            RuntimeOptions(compile=True, compile_mode=args.compile_mode)))
    else:
        for s in ("merge_lora", "channels_last"):
            configs.append((f"plain + {s} (off by default on the CPU)", torch.float32,
                            RuntimeOptions(**{**{k: False for k in SWITCHES}, s: True})))
        configs.append(("plain + merge_lora + channels_last", torch.float32,
                        RuntimeOptions(merge_lora=True, channels_last=True, fp16_without_autocast=False,
                                       cudnn_benchmark=False)))
    rows, raw = [], []
    for label, dtype, rt in configs:
        if label.startswith("plain fp32"):
            t, err = ref_t, 0.0
        else:
            pipe = builder.pipeline(device, dtype, rt)
            warm = args.warmup + (3 if rt.compile else 0)
            t = median_time(lambda: pipe.forward_persons(persons, focal=f, principal=pp, pad_to=bs), device, warm,
                            args.repeat)
            out = pipe.forward_persons(persons, focal=f, principal=pp, pad_to=bs)["vertices"]
            err = float(np.abs(out - ref).max())
            del pipe
        rows.append([label, bs / t, ref_t / t, err * 1e3])
        raw.append(dict(label=label, persons_s=bs / t, max_vertex_err_mm=err * 1e3))
    table(f"Ablation at batch {bs}: each switch against the fp32 plain path on the same persons",
          ["configuration", "persons/s", "x plain fp32", "max vertex err (mm)"], rows)
    results["ablation"] = raw


@contextlib.contextmanager
def _timed(owner, name: str, bucket: dict, key: str, device):
    real = getattr(owner, name)

    def wrapper(*a, **k):
        sync(device)
        t = time.perf_counter()
        out = real(*a, **k)
        sync(device)
        bucket[key] = bucket.get(key, 0.0) + time.perf_counter() - t
        return out

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, real)


def section_e2e(args, builder, device, results, tmp: Path):
    import dpmesh_infer.geometry.crops as crops
    import dpmesh_infer.pipeline as pipeline_mod

    pipe = builder.pipeline(device)
    paths, kps, _ = write_photos(tmp / "e2e", args.e2e_images, args.people)
    pipe(paths[:2], keypoints=kps[:2])  # warm-up
    runs = []
    for _ in range(max(1, args.repeat // 2)):
        b: dict[str, float] = {}
        with _timed(pipe, "prepare", b, "prepare", device), _timed(pipe, "_forward_device", b, "device", device), \
                _timed(crops, "collate", b, "collate", device), \
                _timed(crops.PersonBatch, "to", b, "h2d", device), \
                _timed(pipeline_mod, "_to_host", b, "d2h", device):
            sync(device)
            t = time.perf_counter()
            out = pipe(paths, keypoints=kps)
            sync(device)
            b["total"] = time.perf_counter() - t
        runs.append(b)
    b = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    persons = sum(len(r.persons) for r in out.images)
    copies = b["collate"] + b["h2d"] + b["d2h"]
    forward = b["device"] - b["collate"] - b["h2d"]
    results_s = b["total"] - b["prepare"] - b["device"] - b["d2h"]
    rows = [[f"{len(paths)} x 1280x720, {persons} persons", len(paths) / b["total"], persons / b["total"],
             100 * b["prepare"] / b["total"], 100 * copies / b["total"], 100 * forward / b["total"],
             100 * results_s / b["total"]]]
    table(f"Pipeline.__call__ end to end (batch {pipe.default_batch_size})",
          ["input", "images/s", "persons/s", "% decode+crop", "% copies", "% forward", "% results"], rows,
          note="decode+crop: Pipeline.prepare (JPEG decode, keypoints to 30 joints, crops); copies: collate, "
               "host->device, the one device->host copy; results: Person objects.")
    results["e2e"] = dict(images=len(paths), persons=persons, seconds=b)


def section_folder(args, builder, device, results, tmp: Path):
    from dpmesh_infer.batch import BatchRunner, FileKeypoints, plan_batch
    from dpmesh_infer.keypoint_files import read_keypoints

    pipe = builder.pipeline(device)
    paths, _, kp_file = write_photos(tmp / "folder", args.folder_images, args.people)
    kpset = read_keypoints(kp_file)
    warm = BatchRunner(pipe, FileKeypoints(kpset), chunk=2)
    warm.run(plan_batch([str(p) for p in paths[:2]], tmp / "folder_warm"))
    out = tmp / "folder_out"
    runner = BatchRunner(pipe, FileKeypoints(kpset), writers=args.writers)
    t = time.perf_counter()
    summary = runner.run(plan_batch([str(tmp / "folder")], out))
    wall = time.perf_counter() - t
    done = [r for r in summary.records if r.status == "done"]
    persons = sum(r.persons for r in done)
    stages = ("load", "keypoints", "prepare", "infer", "write", "sync")
    sums = {s: sum(r.seconds.get(s, 0.0) for r in done) for s in stages}
    host = sum(v for k, v in sums.items() if k != "infer")
    rows = [[s, 1e3 * v / persons, 100 * v / max(sum(sums.values()), 1e-12)] for s, v in sums.items()]
    rows.append(["host total (all but infer)", 1e3 * host / persons, 100 * host / max(sum(sums.values()), 1e-12)])
    table(f"Folder run: {len(done)} photos, {persons} persons in {wall:.1f} s = {persons / wall:.1f} persons/s "
          f"(chunk {runner.chunk}, batch {pipe.default_batch_size}, {runner.writers} writer threads)",
          ["stage (manifest seconds)", "ms/person", "% of stage time"], rows,
          note="Stages overlap (prepare thread, networks, writer threads): the wall time is less than their "
               f"sum ({sum(sums.values()):.1f} s). Write fraction = (write + sync) / stage time = "
               f"{100 * (sums['write'] + sums['sync']) / max(sum(sums.values()), 1e-12):.1f} %.")
    results["folder"] = dict(images=len(done), persons=persons, wall_s=wall, persons_s=persons / wall,
                             ms_per_person=({s: 1e3 * v / persons for s, v in sums.items()}
                                            | {"host": 1e3 * host / persons}))


def _legacy_write(result, faces, folder: Path) -> None:
    """The folder-run writer as it was before the fast writers (kept here only to measure the ratio), for
    the files of today: the old folder cleaning, trimesh OBJ per person, scene.glb exported by trimesh
    (with today's vertex normals and materials), .npz, people.json by ``json.dumps(indent=1)``, each file
    written atomically with an fsync."""
    import trimesh
    from trimesh.exchange.gltf import export_glb

    from dpmesh_infer.atomic import write_bytes
    from dpmesh_infer.batch import DONE_FILE, RENDER_FILES
    from dpmesh_infer.export import npz_bytes, result_to_dict
    from dpmesh_infer.geometry.camera import OPENCV_TO_GL
    from dpmesh_infer.render import person_colors

    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_FILE).unlink(missing_ok=True)
    for old in [*folder.glob("person_*.obj"), *(folder / name for name in RENDER_FILES), *folder.glob(".*.tmp")]:
        old.unlink(missing_ok=True)
    write_bytes(folder / "params.npz", npz_bytes(result))
    for i, p in enumerate(result.persons):
        data = trimesh.Trimesh(np.asarray(p.vertices, np.float64), faces, process=False).export(file_type="obj")
        write_bytes(folder / f"person_{i:02d}.obj", data.encode())
    scene = trimesh.Scene()
    for i, (p, c) in enumerate(zip(result.persons, person_colors(len(result.persons)))):
        mesh = trimesh.Trimesh(np.asarray(p.vertices, np.float64) @ OPENCV_TO_GL.T, faces, process=False)
        mesh.visual = trimesh.visual.TextureVisuals(material=trimesh.visual.material.PBRMaterial(
            name=f"person_{i:02d}", baseColorFactor=[*c, 1.0], metallicFactor=0.0, roughnessFactor=0.7))
        scene.add_geometry(mesh, node_name=f"person_{i:02d}", geom_name=f"person_{i:02d}")
    write_bytes(folder / "scene.glb", export_glb(scene, include_normals=True))
    write_bytes(folder / "people.json", (json.dumps(result_to_dict(result), indent=1) + "\n").encode())


def _legacy_load(path: Path) -> np.ndarray:
    """The image loader as it was before (kept only to measure the ratio): the EXIF transpose and the
    RGB conversion each copy the decoded photo."""
    from PIL import Image, ImageOps

    with Image.open(path) as img:
        img.load()
        return np.ascontiguousarray(np.asarray(ImageOps.exif_transpose(img).convert("RGB"), dtype=np.uint8))


def _now() -> tuple[float, float]:
    return time.perf_counter(), time.thread_time()


def _dt(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return b[0] - a[0], b[1] - a[1]


HOST_LEGS = ("before", "after, glibc defaults", "after")


def host_leg(args, builder, device, tmp: Path, label: str) -> dict:
    """One leg of the host section in this (fresh) process: {"persons", "steps": {step: (wall, CPU) s}}.

    ``before``: the legacy writers with glibc's default malloc settings (as the old tool ran);
    ``after, glibc defaults``: today's writers, malloc untouched (the library in a caller's process);
    ``after``: :func:`~dpmesh_infer.devices.keep_freed_memory` first, as a folder run does."""
    from dpmesh_infer.atomic import sync_files
    from dpmesh_infer.batch import BundleWriter
    from dpmesh_infer.devices import keep_freed_memory, single_threaded_opencv
    from dpmesh_infer.geometry.crops import collate
    from dpmesh_infer.images import load_image

    tuned = keep_freed_memory() if label == "after" else False
    pipe = builder.pipeline(device)
    paths, kps, _ = write_photos(tmp / "host", args.host_images, args.people, args.host_size)
    faces = pipe.faces
    res = pipe(paths, keypoints=kps).images  # the results the writers write (not timed)
    bundle = BundleWriter(faces)
    # all host work on this thread, so that its CPU time is all of it (OpenCV's and torch's pools would
    # do part of the crops and the collation on threads time.thread_time does not see)
    single_threaded_opencv()
    torch.set_num_threads(1)
    for path, kp in zip(paths, kps):  # warm-up: page cache, allocator, first-call imports
        collate(pipe.prepare([load_image(path)], [kp]).persons)
    # and the writers' one-time work (imports; the GLB template of this person count, the normals'
    # tables: built once per run, not per image)
    if label == "before":
        _legacy_write(res[0], faces, tmp / "warm")
    else:
        bundle.write_data(res[0], tmp / "warm")
    def one_pass(out: Path) -> dict[str, tuple[float, float]]:
        steps: dict[str, tuple[float, float]] = {}

        def add(key, v):  # v = (wall, CPU) seconds
            old = steps.get(key, (0.0, 0.0))
            steps[key] = (old[0] + v[0], old[1] + v[1])

        written: list = []
        for k, (path, kp, r) in enumerate(zip(paths, kps, res)):
            t = _now()
            rgb = _legacy_load(path) if label == "before" else load_image(path)
            t1 = _now()
            prepared = pipe.prepare([rgb], [kp])
            t2 = _now()
            collate(prepared.persons)  # the host side of the copy to the device
            t3 = _now()
            folder = out / f"img{k}"
            if label == "before":
                _legacy_write(r, faces, folder)  # fsync per file, people.json last
            else:
                written += bundle.write_data(r, folder)
            t4 = _now()
            for key, v in (("decode", _dt(t, t1)), ("crop", _dt(t1, t2)), ("collate", _dt(t2, t3)),
                           ("write", _dt(t3, t4))):
                add(key, v)
        t = _now()
        if label != "before":  # as a folder run does per chunk: one sync, then the people.json of each image
            sync_files(written, out)
            for k, r in enumerate(res):
                bundle.write_done(r, out / f"img{k}")
        add("sync+mark", _dt(t, _now()))
        return steps

    # several passes over the photos (2 of the slow legacy leg); the one with the least CPU time is kept
    passes = [one_pass(tmp / f"host_out_{n}") for n in range(2 if label == "before" else args.host_passes)]
    steps = min(passes, key=lambda st: sum(v[1] for v in st.values()))
    return dict(persons=sum(len(r.persons) for r in res), steps=steps, malloc_settings_applied=tuned)


def section_host(args, builder, device, results, tmp: Path):
    """Host CPU cost per person on one thread, before vs after, same images and results.

    Each leg (:data:`HOST_LEGS`, :func:`host_leg`) runs in a fresh process (the malloc settings are
    process-wide and cannot be undone), ``--host-rounds`` times, the legs interleaved, each making
    ``--host-passes`` passes over the photos (2 for the slow legacy leg); the pass with the least CPU
    time of each leg is reported (the machine's noise only ever adds time)."""
    import subprocess

    best: dict[str, dict] = {}
    per_round: list[dict[str, float]] = []  # total CPU (s) of each leg's best pass, per round
    for n in range(args.host_rounds):
        per_round.append({})
        for i, label in enumerate(HOST_LEGS):
            out = tmp / f"host_leg_{n}_{i}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "--size", args.size, "--device", str(device),
                   "--host-images", str(args.host_images), "--people", str(args.people),
                   "--host-size", "x".join(map(str, args.host_size)),
                   "--host-passes", str(args.host_passes),
                   "--host-leg", label, "--json", str(out)]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            leg = json.loads(out.read_text())
            per_round[-1][label] = sum(v[1] for v in leg["steps"].values())
            if label not in best or sum(v[1] for v in leg["steps"].values()) < \
                    sum(v[1] for v in best[label]["steps"].values()):
                best[label] = leg
    persons = best["before"]["persons"]
    tuned = best["after"]["malloc_settings_applied"]
    timings = {label: best[label]["steps"] for label in HOST_LEGS}
    legs = HOST_LEGS
    rows = []
    ms = lambda x: 1e3 * x / persons  # noqa: E731
    for key in ("decode", "crop", "collate", "write", "sync+mark"):
        (bw, bc), (dw, dc), (aw, ac) = (timings[leg][key] for leg in legs)
        rows.append([key, ms(bw), ms(aw), ms(bc), ms(dc), ms(ac), bc / max(ac, 1e-12)])
    tb, td, ta = ([sum(v[k] for v in timings[leg].values()) for k in (0, 1)] for leg in legs)
    rows.append(["total host cost", ms(tb[0]), ms(ta[0]), ms(tb[1]), ms(td[1]), ms(ta[1]), tb[1] / ta[1]])
    w, h = args.host_size
    table(f"Host cost per person of the default outputs, one thread ({args.host_images} photos {w}x{h}, "
          f"{persons} persons, best pass of {args.host_rounds} processes per leg)",
          ["step", "before wall ms", "after wall ms", "before CPU ms", "after CPU ms, glibc defaults",
           "after CPU ms", "CPU before / after"],
          rows,
          note="ms per person. before: the old loader (two copies of the photo), trimesh OBJ + trimesh "
               "scene.glb, people.json by json.dumps(indent=1), an fsync per file, glibc's malloc defaults; "
               "after: ObjWriter, GlbWriter (template JSON), no fsync per file, one filesystem sync "
               "for the photos (one chunk of a folder run), then each people.json, with the folder run's malloc "
               f"settings (keep_freed_memory: {'applied' if tuned else 'NOT applied'}); the middle column is "
               "the same writers with glibc's defaults. CPU: time.thread_time (waiting for the disk is wall, not "
               "CPU; OpenCV and torch on one thread, so it is all the host work). "
               f"Wall before/after: {tb[0] / ta[0]:.1f}x; CPU before / after with glibc defaults: "
               f"{tb[1] / td[1]:.1f}x. Each leg in fresh processes, legs interleaved, the pass with the least "
               "CPU kept; CPU before / after of each round alone: "
               + ", ".join(f"{r['before'] / r['after']:.1f}x" for r in per_round)
               + ". Heatmaps are computed on the device, inside the networks.")
    keys = dict(zip(legs, ("before", "after_glibc_defaults", "after")))
    results["host"] = dict(persons=persons, malloc_settings_applied=tuned,
                           cpu_ratio_per_round=[r["before"] / r["after"] for r in per_round],
                           **{f"{keys[leg]}_{unit}_ms": ms(tot[i]) for leg, tot in zip(legs, (tb, td, ta))
                              for i, unit in ((0, "wall"), (1, "cpu"))},
                           steps={k: {keys[leg]: [ms(x) for x in timings[leg][k]] for leg in legs}
                                  for k in timings["before"]})


def section_detector(args, device, results, tmp: Path):
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    try:
        from bench_detector import build, time_per_image

        from dpmesh_infer.stand_ins.scene import synthetic_crowd

        images = [synthetic_crowd(people=args.people, seed=i)[0] for i in range(8)]
        det, source = build("rtmo-l", args.people, args.weights, "cuda" if device.type == "cuda" else "cpu", tmp)
    except Exception as e:  # noqa: BLE001 -- the section reports why it cannot run
        table("Detector", ["detector", "status"], [["rtmo-l", f"not run: {type(e).__name__}: {e}"]])
        results["detector"] = dict(error=f"{type(e).__name__}: {e}")
        return
    rows = []
    for batch in (1, 8):
        ms = time_per_image(det, images, batch, max(1, args.repeat // 2))
        rows.append(["rtmo-l", source, batch, ms, 1e3 / ms])
    table(f"Detector on {len(images)} 1280x720 photos, {args.people} people decoded each",
          ["detector", "weights", "batch", "ms/image", "images/s"], rows)
    results["detector"] = [dict(batch=r[2], ms_per_image=r[3]) for r in rows]


# ------------------------------------------------------------------------------------------ main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["tiny", "full"], default="tiny")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default 1 16 64 (CPU full: 1 4)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="add torch.compile rows (minutes of compiling)")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode of those rows")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: table / measured)")
    ap.add_argument("--ablation-batch", type=int, default=None,
                    help="batch of the ablation rows (default: the largest batch size; at most 16 on the CPU)")
    ap.add_argument("--people", type=int, default=10)
    ap.add_argument("--e2e-images", type=int, default=16)
    ap.add_argument("--folder-images", type=int, default=32)
    ap.add_argument("--host-images", type=int, default=8)
    ap.add_argument("--host-size", type=_size, default=(1280, 720), metavar="WxH",
                    help="photo size of the host section (default 1280x720; the issue's first measurement: 640x480)")
    ap.add_argument("--host-rounds", type=int, default=2, help="fresh processes per host leg (the least CPU is kept)")
    ap.add_argument("--host-passes", type=int, default=5, help="passes over the photos in each fast host leg")
    ap.add_argument("--writers", type=int, default=None)
    ap.add_argument("--weights", type=Path, default=None, help="detector checkpoints (else random-init)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    ap.add_argument("--host-leg", choices=HOST_LEGS, default=None, help=argparse.SUPPRESS)  # section_host's child
    args = ap.parse_args()
    if args.host_leg:
        with tempfile.TemporaryDirectory(prefix="dpmesh-bench-") as tmp_dir:
            leg = host_leg(args, Builder(args.size), torch.device(args.device), Path(tmp_dir), args.host_leg)
        args.json.write_text(json.dumps(leg))
        return

    from dpmesh_infer.devices import resolve_device

    device = resolve_device(args.device)
    if args.batch_sizes is None:
        args.batch_sizes = [1, 4] if (device.type == "cpu" and args.size == "full") else [1, 16, 64]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu")
    print(f"## bench_throughput: size={args.size} device={device} ({name}), torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, python {platform.python_version()}")
    print("command: python benchmarks/bench_throughput.py " + " ".join(sys.argv[1:]))
    t_start = time.perf_counter()
    builder = Builder(args.size)
    results: dict = dict(size=args.size, device=str(device), device_name=name, torch=torch.__version__)
    sections = args.sections
    with tempfile.TemporaryDirectory(prefix="dpmesh-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        for section in sections:
            t = time.perf_counter()
            with torch.inference_mode(False):
                if section == "networks":
                    section_networks(args, builder, device, results)
                elif section == "overhead":
                    section_overhead(args, builder, device, results)
                elif section == "stages":
                    section_stages(args, builder, device, results)
                elif section == "ablation":
                    section_ablation(args, builder, device, results)
                elif section == "e2e":
                    section_e2e(args, builder, device, results, tmp)
                elif section == "folder":
                    section_folder(args, builder, device, results, tmp)
                elif section == "host":
                    section_host(args, builder, device, results, tmp)
                elif section == "detector":
                    section_detector(args, device, results, tmp)
            print(f"\n({section}: {time.perf_counter() - t:.0f} s)", file=sys.stderr)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    with contextlib.redirect_stderr(io.StringIO()) if os.environ.get("DPMESH_BENCH_QUIET") else \
            contextlib.nullcontext():
        main()
