"""The inference pipeline: images + 2D keypoints -> SMPL meshes in each photo's camera.

Stages (each its own module, batched over persons of all images):

1. :mod:`.preprocess` — joint-set mapping, square box, 256x256 crop, 32-grid joints, mask (CPU numpy).
2. :mod:`.backbone` — heatmaps, VAE latent, ControlNet + LoRA UNet at t=1, taps and attention maps
   merged to (B, 2048, 8, 8). fp16 autocast on CUDA, fp32 on CPU.
3. :mod:`.regressor` — transformer regressor: root 6D, pose latent/logits, betas, camera.
4. :mod:`.pose_decoders` — VPoser or VQ-VAE decoder -> body pose (fp32).
5. :mod:`.body` / :mod:`.camera` — SMPL (fp32), 30 joints, placement in the photo camera K.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .devices import resolve_device
from .errors import InputError, WeightsError
from .images import ImageLike, load_image
from .outputs import ImageResult, Person, PipelineOutput
from .weights.layout import COMPONENTS, PIPELINE_CONFIG_NAME, load_pipeline_config
from .models.dpmesh import PipelineConfig

logger = logging.getLogger(__name__)

#: Joint formats accepted as raw arrays, by number of joints.
_FORMAT_BY_JOINTS = {17: "coco17", 18: "openpose18", 25: "openpose25", 30: "j30"}


def missing_weight_files(weights_dir: Path) -> list[str]:
    """Every file of a complete weights directory that is absent (empty list when complete)."""
    from .weights.smpl import SMPL_FILENAME, SMPL_SUBDIR

    need = [PIPELINE_CONFIG_NAME]
    for comp in COMPONENTS:
        if comp == "unet_lora":
            need += [f"{comp}/adapter_config.json", f"{comp}/adapter_model.safetensors"]
        elif comp in ("vae", "unet", "controlnet"):
            need += [f"{comp}/config.json", f"{comp}/diffusion_pytorch_model.safetensors"]
        else:
            need += [f"{comp}/config.json", f"{comp}/model.safetensors"]
    need.append(f"{SMPL_SUBDIR}/{SMPL_FILENAME}")
    return [n for n in need if not (weights_dir / n).is_file()]


def _missing_message(weights_dir: Path, source: str, missing: list[str], searched: Sequence[str]) -> str:
    lines = [f"weights directory {weights_dir} (from {source}) is incomplete; missing:"]
    lines += [f"    {weights_dir / m}" for m in missing]
    fixes = []
    if any(not m.startswith("smpl/") for m in missing):
        fixes.append(f"dpmesh weights convert-official /path/to/3dpw_best_ckpt.pth.tar --out {weights_dir}")
    if any(m.startswith("smpl/") for m in missing):
        fixes.append(f"dpmesh weights import-smpl /path/to/SMPL_NEUTRAL.pkl --weights {weights_dir}")
    lines.append("  looked in: " + "; ".join(searched))
    lines.append("  fix with:")
    lines += [f"    {f}" for f in fixes]
    lines.append("  (see weights/README.md for where to obtain each file)")
    return "\n".join(lines)


def _resolve_device_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    dev = resolve_device(device)
    if isinstance(dtype, str):
        names = {"auto": None, "fp16": torch.float16, "float16": torch.float16, "fp32": torch.float32,
                 "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        if dtype not in names:
            raise InputError(f"unknown dtype {dtype!r}; use one of auto, fp16, bf16, fp32")
        dtype = names[dtype]
    if dtype is None:
        dtype = torch.float16 if dev.type == "cuda" else torch.float32
    if dev.type == "cpu" and dtype != torch.float32:
        raise InputError(f"{dtype} runs only on CUDA; on the CPU the pipeline computes in float32")
    return dev, dtype


@dataclass
class _PersonMeta:
    image_index: int
    person_index: int
    score: float


class Pipeline:
    """DPMesh inference: ``Pipeline.from_pretrained(DIR)(images, keypoints=...)``.

    Components are passed explicitly (see :meth:`from_pretrained`). The networks run in ``dtype``
    (float16 autocast on CUDA by default, float32 on CPU); attention maps, the pose decoder and SMPL
    always run in float32.
    """

    def __init__(self, *, config: PipelineConfig, backbone, regressor, pose_decoder, body,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> None:
        self.config = config
        self.backbone = backbone
        self.regressor = regressor
        self.pose_decoder = pose_decoder
        self.body = body
        self.device, self.dtype = _resolve_device_dtype(device, dtype)
        self._place()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, weights: str | os.PathLike | None = None, *, device=None,
                        dtype=None) -> "Pipeline":
        """Load a weights directory (``weights``, else ``$DPMESH_WEIGHTS``, else the user cache).

        Args:
            weights: weights directory in our format (``dpmesh weights convert-official`` writes one).
            device: "cpu", "cuda", "cuda:1", a torch.device, or None/"auto" (CUDA when available).
            dtype: network dtype; None/"auto" = float16 on CUDA, float32 on CPU.

        Raises:
            WeightsError: the directory or any file is missing (one message lists all of them, where it
                looked, and the commands that fix it), or a file does not match the architecture.
        """
        from .models.backbone import DiffusionBackbone
        from .models.body import load_smpl
        from .models.pose_decoders import load_pose_decoder
        from .models.regressor import load_regressor
        from .weights.resolve import resolve_weights_dir

        loc = resolve_weights_dir(weights)
        missing = missing_weight_files(loc.path)
        if missing:
            raise WeightsError(_missing_message(loc.path, loc.source, missing, loc.searched))
        config = load_pipeline_config(loc.path)
        pose_decoder = load_pose_decoder(loc.path / "pose_decoder")
        if pose_decoder.config.type != config.pose_decoder:
            raise WeightsError(
                f"{loc.path / PIPELINE_CONFIG_NAME} names pose decoder {config.pose_decoder!r} but "
                f"{loc.path / 'pose_decoder'} holds a {pose_decoder.config.type!r} decoder"
            )
        regressor = load_regressor(loc.path / "regressor")
        if regressor.config.pose_head != config.pose_decoder:
            raise WeightsError(
                f"regressor in {loc.path / 'regressor'} predicts for {regressor.config.pose_head!r} but the "
                f"pipeline uses the {config.pose_decoder!r} pose decoder"
            )
        dev, dt = _resolve_device_dtype(device, dtype)
        backbone = DiffusionBackbone.from_pretrained(loc.path, device="cpu")
        body = load_smpl(loc.path)
        logger.info("loaded weights from %s (%s)", loc.path, loc.source)
        if config.untrained:
            logger.warning("the weights in %s are UNTRAINED (random init): results are meaningless", loc.path)
        return cls(config=config, backbone=backbone, regressor=regressor, pose_decoder=pose_decoder,
                   body=body, device=dev, dtype=dt)

    def _place(self) -> None:
        net_dtype = self.dtype if self.device.type == "cuda" else torch.float32
        self.backbone.to(device=self.device, dtype=net_dtype).eval()
        self.regressor.to(device=self.device).eval()
        self.pose_decoder.to(device=self.device, dtype=torch.float32).eval()
        self.body.to(device=self.device)

    def to(self, device=None, dtype=None) -> "Pipeline":
        """Move to ``device`` and/or switch the network dtype (returns self)."""
        self.device, self.dtype = _resolve_device_dtype(device if device is not None else self.device,
                                                        dtype if dtype is not None else self.dtype)
        self._place()
        return self

    @property
    def faces(self) -> np.ndarray:
        """(13776, 3) int64 SMPL triangle indices."""
        return np.asarray(self.body.faces, dtype=np.int64)

    # ------------------------------------------------------------------ inputs

    def _keypoints_for(self, kp, image_path: str | None, i: int):
        """Normalise one image's keypoints to (kp30 (N,30,3), fallback boxes, scores)."""
        from .keypoint_files import KeypointPerson, KeypointSet
        from .geometry.joints import to_j30

        if isinstance(kp, KeypointSet):
            if image_path is None:
                raise InputError("a keypoint file can only be matched to images given as paths")
            persons = kp.lookup(image_path)
            if persons is None:
                raise InputError(f"{kp.source} has no keypoints for image {image_path}")
            kp = persons
        if isinstance(kp, (list, tuple)) and (len(kp) == 0 or isinstance(kp[0], KeypointPerson)):
            kp30 = np.stack([p.kp30() for p in kp]) if kp else np.zeros((0, 30, 3))
            boxes = [p.bbox for p in kp]
            scores = [1.0 if p.score is None else float(p.score) for p in kp]
            return kp30, boxes, scores
        arr = np.asarray(kp, dtype=np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[1] not in _FORMAT_BY_JOINTS:
            raise InputError(
                f"keypoints of image {i} must be (N, J, 3) [x, y, confidence] with J = 17 (COCO), 18 or 25 "
                f"(OpenPose) or 30 (dpmesh set); got shape {tuple(np.shape(kp))}"
            )
        if not np.all(np.isfinite(arr)):
            raise InputError(f"keypoints of image {i} contain NaN or infinite values")
        if np.any(arr[..., 2] < 0):
            raise InputError(f"keypoints of image {i} have negative confidences")
        fmt = _FORMAT_BY_JOINTS[arr.shape[1]]
        kp30 = arr if fmt == "j30" else to_j30(arr, fmt)
        return kp30, [None] * len(kp30), [1.0] * len(kp30)

    # ------------------------------------------------------------------ running

    def __call__(self, images: ImageLike | Sequence[ImageLike], keypoints, *, focal=None,
                 principal=None, batch_size: int = 16) -> PipelineOutput:
        """Reconstruct every person of every image.

        Args:
            images: one image or a list (paths, PIL images, or arrays; see :func:`load_image`).
            keypoints: per image, an array (N, J, 3) [x, y, confidence] in pixels with J = 17 (COCO-17),
                18/25 (OpenPose) or 30 (internal set), or a list of
                :class:`~dpmesh_infer.detect.keypoint_files.KeypointPerson`; for a list of images, a list
                of those — or one :class:`~dpmesh_infer.detect.keypoint_files.KeypointSet` (a parsed
                keypoint file) matched to image paths.
            focal: focal length in pixels for the output camera K (a number, or one per image);
                default sqrt(W^2 + H^2), the value the model was trained with.
            principal: (cx, cy) principal point in pixels (or one per image); default image centre.
            batch_size: persons per network batch (persons of different images share batches).

        Returns:
            PipelineOutput with one ImageResult per image, in input order.
        """
        from .keypoint_files import KeypointSet, validate_against_image
        from .geometry.crops import prepare_persons

        single = not isinstance(images, (list, tuple))
        image_list = [images] if single else list(images)
        if isinstance(keypoints, KeypointSet):
            kp_list = [keypoints] * len(image_list)
        elif single:
            kp_list = [keypoints]
        else:
            kp_list = list(keypoints)
        if len(kp_list) != len(image_list):
            raise InputError(f"got {len(image_list)} images but keypoints for {len(kp_list)}")
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        focals = self._per_image(focal, len(image_list), "focal")
        principals = self._per_image(principal, len(image_list), "principal")

        results: list[ImageResult] = []
        all_persons, metas = [], []
        for i, (img, kp) in enumerate(zip(image_list, kp_list)):
            path = str(img) if isinstance(img, (str, os.PathLike)) else None
            rgb = load_image(img)
            h, w = rgb.shape[:2]
            kp30, boxes, scores = self._keypoints_for(kp, path, i)
            # joints far outside the photo (keypoints meant for another image size) count as missing
            kp30, _ = validate_against_image(kp30, w, h, where=path or f"image {i}")
            persons, skipped = prepare_persons(rgb, kp30, self.config.preprocess, boxes, image_index=i)
            f = float(focals[i]) if focals[i] is not None else math.sqrt(w * w + h * h)
            pp = principals[i] if principals[i] is not None else (w / 2.0, h / 2.0)
            K = np.array([[f, 0, pp[0]], [0, f, pp[1]], [0, 0, 1]], dtype=np.float32)
            results.append(ImageResult(persons=[], K=K, image_size=(w, h), source=path, skipped=list(skipped),
                                       focal_source="default sqrt(W^2+H^2)" if focals[i] is None else "given"))
            for p in persons:
                all_persons.append(p)
                metas.append(_PersonMeta(i, p.person_index, scores[p.person_index]))

        per_image: dict[int, list[tuple[int, Person]]] = {i: [] for i in range(len(image_list))}
        for start in range(0, len(all_persons), batch_size):
            chunk = all_persons[start:start + batch_size]
            k_focal = torch.tensor([results[p.image_index].K[0, 0] for p in chunk], dtype=torch.float32)
            k_pp = torch.tensor(np.stack([results[p.image_index].K[:2, 2] for p in chunk]), dtype=torch.float32)
            out = self.forward_persons(chunk, focal=k_focal, principal=k_pp)
            for j, meta in enumerate(metas[start:start + batch_size]):
                per_image[meta.image_index].append((meta.person_index, self._person(out, j, chunk[j], meta.score)))
        for i, res in enumerate(results):
            res.persons = [p for _, p in sorted(per_image[i], key=lambda t: t[0])]
        return PipelineOutput(images=results, faces=self.faces)

    @staticmethod
    def _per_image(value, n: int, name: str) -> list:
        if value is None:
            return [None] * n
        if name == "focal" and np.ndim(value) == 0:
            if not float(value) > 0:
                raise InputError(f"focal must be a positive number of pixels, got {value}")
            return [float(value)] * n
        if name == "principal" and np.shape(value) == (2,):
            return [tuple(map(float, value))] * n
        vals = list(value)
        if len(vals) != n:
            raise InputError(f"{name}: got {len(vals)} values for {n} images")
        return vals

    @staticmethod
    def _person(out: dict[str, torch.Tensor], j: int, p, score: float) -> Person:
        def a(name):
            return out[name][j].detach().float().cpu().numpy()

        cx, cy, side = (float(v) for v in p.box)
        return Person(
            vertices=a("vertices"), joints=a("joints"), global_orient=a("global_orient"),
            body_pose=a("body_pose"), betas=a("betas"), transl=a("transl"),
            keypoints_2d=np.asarray(p.keypoints_2d, np.float32), joints_2d=a("joints_2d"),
            bbox=np.array([cx - side / 2, cy - side / 2, side, side], np.float32), score=float(score),
        )

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def forward_persons(self, persons: list, *, focal: torch.Tensor, principal: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the networks and the body model on preprocessed persons (one network batch).

        Args:
            persons: list of :class:`~dpmesh_infer.preprocess.PersonInput` (any images).
            focal: (B,) focal length of each person's output camera K, pixels.
            principal: (B, 2) principal point of each person's K, pixels.

        Returns:
            dict of tensors (B, ...): vertices (6890,3), joints (30,3) and transl (3) in metres in the
            photo camera; global_orient (3), body_pose (23,3) axis-angle; betas (10); joints_2d (30,2)
            pixels; cam (3) raw; transl_crop (3) crop-camera translation.
        """
        from .geometry.camera import camera_translation, place_in_image, project
        from .geometry.crops import collate, make_heatmaps
        from .geometry.rotations import rot6d_to_axis_angle

        batch = collate(persons).to(self.device)
        cfg = self.config.preprocess
        sizes = batch.image_size.to(torch.float32)
        model_focal = torch.sqrt((sizes ** 2).sum(dim=1))  # sqrt(W^2 + H^2) per person's image
        if not self.config.focal_per_image:
            model_focal = model_focal[:1].expand_as(model_focal)  # upstream: first sample for the batch
        focal = focal.to(self.device)
        principal = principal.to(self.device)

        heatmaps = make_heatmaps(batch.joints32, batch.mask, size=cfg.heatmap_size, sigma=cfg.heatmap_sigma)
        net_dtype = next(self.backbone.parameters()).dtype
        with self._autocast():
            feats = self.backbone(batch.images.to(net_dtype), batch.joints32.to(net_dtype), heatmaps.to(net_dtype))
            reg = self.regressor(feats)
        global_orient = rot6d_to_axis_angle(reg.root_pose_6d.float())
        body_pose = self.pose_decoder(reg.pose.float())
        betas = reg.betas.float()
        cam = reg.cam.float()
        transl_crop = camera_translation(cam, model_focal, input_size=cfg.input_size)
        body = self.body(global_orient, body_pose, betas, transl_crop)
        root_crop = body.root
        root_full = place_in_image(root_crop, batch.box, focal, principal, model_focal=model_focal,
                                   crop_size=cfg.input_size)
        offset = root_full - root_crop
        placed = body.translated(offset)
        return {
            "vertices": placed.vertices, "joints": placed.joints, "global_orient": global_orient,
            "body_pose": body_pose, "betas": betas, "transl": transl_crop + offset,
            "joints_2d": project(placed.joints, focal, principal, eps=0.0), "cam": cam,
            "transl_crop": transl_crop,
        }
