"""The inference pipeline: images + 2D keypoints -> SMPL meshes in each photo's camera.

:class:`Pipeline` wraps the one composed network :class:`~dpmesh_infer.models.dpmesh.DPMesh` with
what a user needs around it:

1. inputs — images (paths, PIL, arrays) and keypoints (arrays in COCO-17 / OpenPose / J30, parsed
   keypoint files), mapped to the 30-joint set; the 256x256 crops and 32-grid joints of
   :mod:`~dpmesh_infer.geometry.crops` (CPU numpy);
2. batching — the persons of all images share network batches of ``batch_size``;
3. the network — fp16 autocast on CUDA, fp32 on CPU (attention maps, pose decoder, SMPL always fp32);
4. the photo camera — one K per image (:mod:`~dpmesh_infer.focal` picks the focal); every person is
   placed so its pelvis reprojects exactly onto its crop position
   (:func:`~dpmesh_infer.geometry.camera.place_in_image`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .devices import resolve_device
from .errors import ConfigError, InputError, WeightsError
from .focal import FocalChoice, resolve_focals
from .geometry.camera import place_in_image, project
from .images import ImageLike, load_image
from .models.dpmesh import DPMesh, PipelineConfig
from .outputs import ImageResult, Person, PipelineOutput

if TYPE_CHECKING:
    from .geometry.crops import PersonInput

logger = logging.getLogger(__name__)

#: Joint formats accepted as raw arrays, by number of joints.
_FORMAT_BY_JOINTS = {17: "coco17", 18: "openpose18", 25: "openpose25", 30: "j30"}


def _check_refine(refine):
    """``refine`` must be None or a refinement config (duck-typed: the pipeline does not import it)."""
    if refine is not None and not callable(getattr(refine, "refine_chunk", None)):
        raise InputError(f"refine must be a dpmesh_infer.refine.RefineConfig or None, got {type(refine).__name__}")
    return refine


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


@dataclass
class PreparedImages:
    """What :meth:`Pipeline.prepare` builds on the CPU for :meth:`Pipeline.infer`: per image its result
    (K, size, source, skipped persons; ``persons`` still empty) and every person's crop and joint inputs."""

    results: list[ImageResult]
    persons: list  # PersonInput, in image then person order
    metas: list[_PersonMeta]

    @property
    def num_persons(self) -> int:
        return len(self.persons)

    @classmethod
    def concat(cls, parts: Sequence["PreparedImages"]) -> "PreparedImages":
        """One PreparedImages of ``parts``' images in order (image indices renumbered), e.g. images
        prepared one by one in a thread pool, to share network batches in one :meth:`Pipeline.infer`."""
        results, persons, metas = [], [], []
        for part in parts:
            base = len(results)
            results += part.results
            persons += [dataclasses.replace(p, image_index=p.image_index + base) for p in part.persons]
            metas += [dataclasses.replace(m, image_index=m.image_index + base) for m in part.metas]
        return cls(results=results, persons=persons, metas=metas)


@dataclass(frozen=True)
class RuntimeOptions:
    """Inference switches of the fast path. ``None`` means the device's default: on for CUDA (where they
    keep the results within the fp16 tolerance of the plain path), off on the CPU (where they would change
    the fp32 results, which must stay those of the upstream model: merged LoRA moves them by about 1e-6
    relative, channels_last by about 1e-5).

    Attributes:
        merge_lora: fold the LoRA weights into the UNet at load (288 fewer matmuls per forward).
        channels_last: convolutions in channels_last memory format.
        fp16_without_autocast: with dtype float16, run the fp16 backbone weights directly instead of under
            autocast (no casts around every norm; the attention maps are still computed in fp32).
        cudnn_benchmark: let cuDNN pick the fastest convolution algorithms (``torch.backends.cudnn.benchmark``,
            a process-wide setting).
        compile: ``torch.compile`` the backbone's blocks (opt-in; the first batches compile, minutes);
            the last batch is padded to the batch size so shapes stay fixed.
        compile_mode: torch.compile mode; "reduce-overhead" adds CUDA graphs (the host launches one graph
            per block instead of thousands of kernels).
    """

    merge_lora: bool | None = None
    channels_last: bool | None = None
    fp16_without_autocast: bool | None = None
    cudnn_benchmark: bool | None = None
    compile: bool = False
    compile_mode: str | None = None

    def resolved(self, device: torch.device, dtype: torch.dtype) -> "RuntimeOptions":
        """Every ``None`` replaced by the default for ``device`` / ``dtype``."""
        cuda = device.type == "cuda"
        pick = (lambda v, default: default if v is None else v)
        return RuntimeOptions(merge_lora=pick(self.merge_lora, cuda), channels_last=pick(self.channels_last, cuda),
                              fp16_without_autocast=pick(self.fp16_without_autocast, cuda and dtype == torch.float16),
                              cudnn_benchmark=pick(self.cudnn_benchmark, cuda), compile=self.compile,
                              compile_mode=self.compile_mode)

    @classmethod
    def plain(cls) -> "RuntimeOptions":
        """Every switch off (the reference path the fast path is tested against)."""
        return cls(merge_lora=False, channels_last=False, fp16_without_autocast=False, cudnn_benchmark=False)


class Pipeline:
    """DPMesh inference: ``Pipeline.from_pretrained(DIR)(images, keypoints=...)``.

    Components are passed explicitly (diffusers style) and composed into one
    :class:`~dpmesh_infer.models.dpmesh.DPMesh` (``self.model``; the constructor checks that they fit
    together). The networks run in ``dtype`` (float16 autocast on CUDA by default, float32 on CPU);
    attention maps, the pose decoder and SMPL always run in float32.

    ``refine``: a :class:`dpmesh_infer.refine.RefineConfig` to fit every body to its confident keypoints
    after the network (SMPLify-X style; :meth:`__call__` can override it per call), or None.
    """

    def __init__(self, *, config: PipelineConfig, backbone, regressor, pose_decoder, body,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 runtime: RuntimeOptions | None = None, refine=None) -> None:
        self.config = config
        self.model = DPMesh.from_config(config, backbone=backbone, regressor=regressor, pose_decoder=pose_decoder,
                                        body=body)
        self.device, self.dtype = _resolve_device_dtype(device, dtype)
        self._runtime_request = runtime or RuntimeOptions()
        self._compiled = False
        self.refine = _check_refine(refine)
        self._place()

    # ------------------------------------------------------------------ components
    @property
    def backbone(self):
        return self.model.backbone

    @property
    def regressor(self):
        return self.model.regressor

    @property
    def pose_decoder(self):
        return self.model.pose_decoder

    @property
    def body(self):
        return self.model.body

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, weights: str | os.PathLike | None = None, *, device=None,
                        dtype=None, runtime: RuntimeOptions | None = None, refine=None) -> "Pipeline":
        """Load a weights directory (``weights``, else ``$DPMESH_WEIGHTS``, else the user cache).

        Args:
            weights: weights directory in our format (``dpmesh weights convert-official`` writes one).
            device: "cpu", "cuda", "cuda:1", a torch.device, or None/"auto" (CUDA when available).
            dtype: network dtype; None/"auto" = float16 on CUDA, float32 on CPU.
            runtime: the fast-path switches (:class:`RuntimeOptions`; default: the device's defaults).
            refine: a :class:`dpmesh_infer.refine.RefineConfig` (keypoint refinement), or None.

        Raises:
            WeightsError: the directory or any file is missing (one message lists all of them, where it
                looked, and the commands that fix it), a file does not match the architecture, or the
                components do not fit together (the message names the directory and both sides).
        """
        from .models.backbone import DiffusionBackbone
        from .models.pose_decoders import load_pose_decoder
        from .models.regressor import load_regressor
        from .weights.layout import (
            backbone_folders,
            component_dir,
            load_pipeline_config,
            missing_files,
            missing_message,
        )
        from .weights.resolve import resolve_weights_dir
        from .weights.smpl import load_smpl

        loc = resolve_weights_dir(weights)
        root = loc.path
        missing = missing_files(root)
        if missing:
            raise WeightsError(missing_message(root, loc.source, missing, loc.searched))
        dev, dt = _resolve_device_dtype(device, dtype)
        try:
            config = load_pipeline_config(root)
            pose_decoder = load_pose_decoder(component_dir(root, "pose_decoder"))
            regressor = load_regressor(component_dir(root, "regressor"))
            backbone = DiffusionBackbone.from_folders(**backbone_folders(root), device="cpu")
            pipe = cls(config=config, backbone=backbone, regressor=regressor, pose_decoder=pose_decoder,
                       body=load_smpl(root), device=dev, dtype=dt, runtime=runtime, refine=refine)
        except ConfigError as e:  # a component config (or their combination) is invalid: bad weights
            raise WeightsError(f"invalid weights in {root}: {e}") from e
        logger.info("loaded weights from %s (%s)", root, loc.source)
        if config.untrained:
            logger.warning("the weights in %s are UNTRAINED (random init): results are meaningless", root)
        return pipe

    def save_pretrained(self, weights_dir: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Write a complete weights directory that :meth:`from_pretrained` loads back (components in
        float32 unless the network is in another dtype; SMPL and its head-top regressor included).

        Written into a staging folder and swapped into place (``weights.layout.write_weights_dir``).
        """
        from .atomic import write_with
        from .models.body_io import write_smpl_npz
        from .models.pose_decoders import save_pose_decoder
        from .models.regressor import save_regressor
        from .weights.layout import (
            EXTRA_REGRESSOR_FILE,
            PIPELINE_CONFIG_NAME,
            SMPL_DIR,
            backbone_folders,
            component_dir,
            smpl_file,
            write_weights_dir,
        )

        def fill(tmp: Path) -> None:
            self.backbone.save_folders(**backbone_folders(tmp))
            save_regressor(self.regressor, component_dir(tmp, "regressor"))
            save_pose_decoder(self.pose_decoder, component_dir(tmp, "pose_decoder"))
            write_smpl_npz(self.body.arrays, smpl_file(tmp))
            extra = self.body.extra_regressor
            if extra is not None:
                write_with(tmp / SMPL_DIR / EXTRA_REGRESSOR_FILE, lambda f: np.save(f, extra, allow_pickle=False))
            self.config.save_json(tmp / PIPELINE_CONFIG_NAME)

        return write_weights_dir(weights_dir, fill, overwrite=overwrite)

    def _place(self) -> None:
        """Move the components and apply the runtime switches resolved for the current device."""
        cuda = self.device.type == "cuda"
        self.runtime = rt = self._runtime_request.resolved(self.device, self.dtype)
        if rt.merge_lora and not self.backbone.lora_merged:
            self.backbone.merge_lora()  # in the weights' own precision, before any cast to fp16
        net_dtype = self.dtype if cuda else torch.float32
        self.backbone.to(device=self.device, dtype=net_dtype).eval()
        self.regressor.to(device=self.device).eval()
        self.pose_decoder.to(device=self.device, dtype=torch.float32).eval()
        self.body.to(device=self.device)
        if rt.channels_last:
            self.backbone.to_channels_last()
        if cuda and rt.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self._use_autocast = not (cuda and self.dtype == torch.float16 and rt.fp16_without_autocast)
        self._fp16_inputs = cuda and self.dtype == torch.float16  # the backbone casts its input to fp16
        if rt.compile and not self._compiled:
            self.backbone.compile(mode=rt.compile_mode)
            self._compiled = True

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
        """Normalise one image's keypoints to (kp30 (N,30,3), fallback boxes, scores, {person: skip reason})."""
        from .geometry.joints import to_j30
        from .keypoint_files import KeypointPerson, KeypointSet

        if isinstance(kp, KeypointSet):
            if image_path is None:
                raise InputError("a keypoint file can only be matched to images given as paths (or sources=)")
            persons = kp.lookup(image_path)
            if persons is None:
                raise InputError(kp.missing_message(image_path))
            kp = persons
        if isinstance(kp, (list, tuple)) and (len(kp) == 0 or isinstance(kp[0], KeypointPerson)):
            kp30 = np.stack([p.kp30() for p in kp]) if kp else np.zeros((0, 30, 3))
            boxes = [p.bbox for p in kp]
            scores = [1.0 if p.score is None else float(p.score) for p in kp]
            # people the file says not to reconstruct (no labelled keypoint, crowd regions): no box, no
            # confident joint -> prepare_persons skips them; their reason replaces its generic one
            reasons = {j: p.skip_reason for j, p in enumerate(kp) if p.skip_reason}
            for j in reasons:
                kp30[j, :, 2] = 0.0
                boxes[j] = None
            return kp30, boxes, scores, reasons
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
        return kp30, [None] * len(kp30), [1.0] * len(kp30), {}

    # ------------------------------------------------------------------ running

    def __call__(self, images: ImageLike | Sequence[ImageLike], keypoints, *,
                 focal: float | Sequence[float | None] | FocalChoice | None = None, principal=None,
                 batch_size: int | None = None, max_pixels: int | None = None,
                 sources: Sequence[str | os.PathLike | None] | None = None, refine=None) -> PipelineOutput:
        """Reconstruct every person of every image (:meth:`prepare`, several images in a thread pool, then
        :meth:`infer`).

        Args:
            images: one image or a list (paths, PIL images, or arrays; see :func:`load_image`).
            keypoints: per image, an array (N, J, 3) [x, y, confidence] in pixels with J = 17 (COCO-17),
                18/25 (OpenPose) or 30 (internal set), or a list of
                :class:`~dpmesh_infer.keypoint_files.KeypointPerson`; for a list of images, a list of
                those — or one :class:`~dpmesh_infer.keypoint_files.KeypointSet` (a parsed keypoint file)
                matched to the image paths (or ``sources``).
            focal: focal length in pixels of the output camera K: a number, one per image (None = the
                default), or a :class:`~dpmesh_infer.focal.FocalChoice` (``--fov``, ``--focal exif``; EXIF
                is read from each image's path or source). Default sqrt(W^2 + H^2), what the model was
                trained with. Where it came from is each result's ``focal_source``.
            principal: (cx, cy) principal point in pixels (or one per image); default image centre.
            batch_size: persons per network batch (persons of different images share batches); default
                :attr:`default_batch_size` (64 on CUDA, 16 on the CPU).
            max_pixels: refuse larger images (decompression-bomb guard; default 100 M or
                ``$DPMESH_MAX_PIXELS``).
            sources: per image, the file it came from, for in-memory images (written as ``source``
                and used to match a KeypointSet and to read EXIF); default the path of path inputs.
            refine: a :class:`dpmesh_infer.refine.RefineConfig` for this call, False for none, or None for
                the pipeline's own ``refine``. Refined persons keep the network's body in ``refinement``.

        Returns:
            PipelineOutput with one ImageResult per image, in input order.
        """
        n_images = len(images) if isinstance(images, (list, tuple)) else 1
        workers = min(n_images, os.cpu_count() or 1, 8)
        if workers > 1:  # decode and crop the images in parallel (PIL, OpenCV and numpy release the GIL)
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers, thread_name_prefix="dpmesh-prepare") as pool:
                prepared = self.prepare(images, keypoints, focal=focal, principal=principal, max_pixels=max_pixels,
                                        sources=sources, map_fn=pool.map)
        else:
            prepared = self.prepare(images, keypoints, focal=focal, principal=principal, max_pixels=max_pixels,
                                    sources=sources)
        return self.infer(prepared, batch_size=batch_size, refine=refine)

    @property
    def default_batch_size(self) -> int:
        """Persons per network batch when none is given: 64 on CUDA (measured: see README Performance), 16 on
        the CPU (more only costs memory there)."""
        return 64 if self.device.type == "cuda" else 16

    def prepare(self, images: ImageLike | Sequence[ImageLike], keypoints, *,
                focal: float | Sequence[float | None] | FocalChoice | None = None, principal=None,
                max_pixels: int | None = None, sources: Sequence[str | os.PathLike | None] | None = None,
                map_fn=map) -> PreparedImages:
        """The CPU half of a call: load the images, map the keypoints to the 30-joint set, build every
        person's crop and joint inputs and each image's camera K (arguments as :meth:`__call__`).

        ``map_fn(f, items)`` runs the per-image work (default the built-in ``map``; a thread pool's ``map``
        overlaps decoding and cropping, which release the GIL). The result feeds :meth:`infer`, possibly
        on another thread while the next images are prepared.
        """
        from .keypoint_files import KeypointSet

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
        if sources is None:
            names = [str(img) if isinstance(img, (str, os.PathLike)) else None for img in image_list]
        else:
            names = [None if s is None else str(s) for s in sources]
            if len(names) != len(image_list):
                raise InputError(f"got {len(image_list)} images but {len(names)} sources")
        principals = self._per_image(principal, len(image_list))
        arrays = list(map_fn(lambda img: load_image(img, max_pixels=max_pixels), image_list))
        sizes = [(a.shape[1], a.shape[0]) for a in arrays]
        focals = resolve_focals(focal, names, sizes)
        crop_dtype = np.float16 if self._fp16_inputs else np.float32

        def one(i: int):
            return self._prepare_image(i, arrays[i], kp_list[i], names[i], focals[i], principals[i], crop_dtype)

        results, all_persons, metas = [], [], []
        for res, persons, image_metas in map_fn(one, range(len(image_list))):
            results.append(res)
            all_persons += persons
            metas += image_metas
        return PreparedImages(results=results, persons=all_persons, metas=metas)

    def _prepare_image(self, i, rgb, kp, path, focal, principal, crop_dtype):
        from .geometry.crops import prepare_persons
        from .keypoint_files import validate_against_image

        h, w = rgb.shape[:2]
        kp30, boxes, scores, reasons = self._keypoints_for(kp, path, i)
        # joints far outside the photo (keypoints meant for another image size) count as missing
        kp30, _ = validate_against_image(kp30, w, h, where=path or f"image {i}")
        persons, skipped = prepare_persons(rgb, kp30, self.config.preprocess, boxes, image_index=i,
                                           crop_dtype=crop_dtype)
        skipped = [(j, reasons.get(j, r)) for j, r in skipped]
        f, f_source = focal
        pp = principal if principal is not None else (w / 2.0, h / 2.0)
        K = np.array([[f, 0, pp[0]], [0, f, pp[1]], [0, 0, 1]], dtype=np.float32)
        res = ImageResult(persons=[], K=K, image_size=(w, h), source=path, skipped=list(skipped),
                          focal_source=f_source)
        return res, persons, [_PersonMeta(i, p.person_index, scores[p.person_index]) for p in persons]

    def infer(self, prepared: PreparedImages, *, batch_size: int | None = None, refine=None) -> PipelineOutput:
        """The device half of a call: the network over the prepared persons in batches of ``batch_size``
        (persons of different images share batches), placed in each image's camera, refined to the
        keypoints when a refinement config is set (``refine``, else the pipeline's; ``False`` turns it off).
        Returns the :class:`PipelineOutput` (``prepared``'s image results, filled in)."""
        batch_size = self.default_batch_size if batch_size is None else batch_size
        refiner = self.refine if refine is None else _check_refine(refine or None)
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        results, persons, metas = prepared.results, prepared.persons, prepared.metas
        per_image: dict[int, list[tuple[int, Person]]] = {i: [] for i in range(len(results))}
        for start in range(0, len(persons), batch_size):
            chunk = persons[start:start + batch_size]
            k_focal = torch.tensor([results[p.image_index].K[0, 0] for p in chunk], dtype=torch.float32)
            k_pp = torch.tensor(np.stack([results[p.image_index].K[:2, 2] for p in chunk]), dtype=torch.float32)
            fields, n = self._forward_device(chunk, focal=k_focal, principal=k_pp, pad_to=batch_size)
            fits = None
            if refiner is not None:  # keypoint refinement of the chunk (dpmesh_infer.refine), batched
                fields, fits = refiner.refine_chunk(self, {k: v[:n] for k, v in fields.items()}, chunk,
                                                    focal=k_focal, principal=k_pp)
            out = _to_host(fields, n)
            for j, meta in enumerate(metas[start:start + batch_size]):
                person = self._person(out, j, chunk[j], meta.score)
                person.refinement = None if fits is None else fits[j]
                per_image[meta.image_index].append((meta.person_index, person))
        for i, res in enumerate(results):
            res.persons = [p for _, p in sorted(per_image[i], key=lambda t: t[0])]
        return PipelineOutput(images=results, faces=self.faces)

    @staticmethod
    def _per_image(value, n: int) -> list:
        if value is None:
            return [None] * n
        if np.shape(value) == (2,):
            return [tuple(map(float, value))] * n
        vals = list(value)
        if len(vals) != n:
            raise InputError(f"principal: got {len(vals)} values for {n} images")
        return vals

    @staticmethod
    def _person(out: dict[str, np.ndarray], j: int, p, score: float) -> Person:
        cx, cy, side = (float(v) for v in p.box)
        return Person(
            vertices=out["vertices"][j], joints=out["joints"][j], global_orient=out["global_orient"][j],
            body_pose=out["body_pose"][j], betas=out["betas"][j], transl=out["transl"][j],
            keypoints_2d=np.asarray(p.keypoints_2d, np.float32), joints_2d=out["joints_2d"][j],
            bbox=np.array([cx - side / 2, cy - side / 2, side, side], np.float32), score=float(score),
        )

    def _autocast(self):
        if self.device.type == "cuda" and self.dtype != torch.float32 and self._use_autocast:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def forward_persons(self, persons: list[PersonInput], *, focal: torch.Tensor, principal: torch.Tensor,
                        pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Run the network on preprocessed persons (one network batch) and place them in the photo camera.

        Args:
            persons: list of :class:`~dpmesh_infer.geometry.crops.PersonInput` (any images).
            focal: (B,) focal length of each person's output camera K, pixels.
            principal: (B, 2) principal point of each person's K, pixels.
            pad_to: with a compiled network (fixed shapes), a smaller batch is padded to this many persons
                (copies of the last one, dropped from the results).

        Returns:
            dict of float32 numpy arrays (B, ...), copied from the device in one transfer: vertices
            (6890,3), joints (30,3) and transl (3) in metres in the photo camera; global_orient (3),
            body_pose (23,3) axis-angle; betas (10); joints_2d (30,2) pixels; cam (3) raw; transl_crop (3)
            crop-camera translation; pose_head the raw pose output (VPoser latent (32) or VQ logits (T, K)).
        """
        return _to_host(*self._forward_device(persons, focal=focal, principal=principal, pad_to=pad_to))

    @torch.inference_mode()
    def _forward_device(self, persons: list[PersonInput], *, focal: torch.Tensor, principal: torch.Tensor,
                        pad_to: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
        """:meth:`forward_persons` before the copy to the host: (fields on the device, possibly padded;
        the number of real persons)."""
        from .geometry.crops import collate

        n = len(persons)
        if self.runtime.compile and pad_to and n < pad_to:
            persons = list(persons) + [persons[-1]] * (pad_to - n)
            focal = torch.cat([focal, focal[-1:].expand(pad_to - n)])
            principal = torch.cat([principal, principal[-1:].expand(pad_to - n, 2)])
        cuda = self.device.type == "cuda"
        batch = collate(persons, pin_memory=cuda).to(self.device, non_blocking=cuda)
        model_focal = self.model.model_focal(batch.image_size)
        focal = focal.to(self.device, non_blocking=cuda)
        principal = principal.to(self.device, non_blocking=cuda)
        with self._autocast():
            out = self.model(batch.images, batch.joints32, batch.mask, model_focal)
        root_full = place_in_image(out.root, batch.box, focal, principal, model_focal=model_focal,
                                   crop_size=self.config.preprocess.input_size)
        offset = (root_full - out.root)[:, None, :]
        joints = out.joints + offset
        fields = {
            "vertices": out.vertices + offset, "joints": joints, "global_orient": out.global_orient,
            "body_pose": out.body_pose, "betas": out.betas, "transl": out.transl + offset[:, 0],
            "joints_2d": project(joints, focal, principal, eps=0.0), "cam": out.cam, "transl_crop": out.transl,
            "pose_head": out.pose_head,
        }
        return fields, n


def _to_host(fields: dict[str, torch.Tensor], n: int) -> dict[str, np.ndarray]:
    """The first ``n`` rows of every (B, ...) tensor as float32 numpy arrays, in ONE device-to-host copy
    (the fields are packed side by side into one (B, K) buffer, copied, and split back as views)."""
    names = list(fields)
    flat = torch.cat([fields[k][:n].reshape(n, -1).float() for k in names], dim=1)
    host = flat.cpu().numpy()
    out, col = {}, 0
    for k in names:
        shape = tuple(fields[k].shape[1:])
        width = int(np.prod(shape)) if shape else 1
        out[k] = host[:, col:col + width].reshape((n, *shape))
        col += width
    return out
