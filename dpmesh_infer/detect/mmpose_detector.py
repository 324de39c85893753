"""COCO-17 keypoints for every person in a photo, from mmpose (RTMO one-stage, or RTMDet + RTMPose).

``KeypointDetector.from_name("rtmo-l", weights_dir)`` builds the network from mmpose's shipped config
and loads its cached, state-dict-only checkpoint (``detectors.py``); ``from_files`` takes your own
config and checkpoint. Calling the detector on a list of RGB uint8 images returns, per image, the
people found, each with keypoints (17,3) [x, y, score] in image pixels (COCO-17 order), a box and a
score; :meth:`KeypointDetector.detect` also reports the people dropped by the thresholds, with reasons.

Weights are always read with ``torch.load(weights_only=True)`` and loaded strictly: every parameter
and batch-norm statistic of the network must be in the file with the right shape; only buffers the
network computes from its config (bin centres, positional-encoding frequencies, OKS sigmas) may be
absent, as they are in OpenMMLab's published files. Networks run in fp32.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from .detectors import DEFAULT_DETECTOR, DetectorWeightsError, config_path, fetch_detector, get_spec, read_state_dict

logger = logging.getLogger(__name__)

NUM_KEYPOINTS = 17
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class DetectedPerson:
    """One detected person. keypoints (17,3) float64 [x, y, score] image px, COCO-17 order (joints of
    a truncated person may lie outside the image); bbox (4,) float64 [x, y, w, h] image px, clipped
    to the image; score: the person (box) score."""

    keypoints: np.ndarray
    bbox: np.ndarray
    score: float

    def to_keypoint_person(self):
        """As a :class:`~dpmesh_infer.keypoint_files.KeypointPerson` (for the keypoint JSON)."""
        from ..keypoint_files import KeypointPerson

        return KeypointPerson(keypoints=self.keypoints.copy(), joint_format="coco17", score=float(self.score),
                              bbox=self.bbox.copy())  # fmt: skip


@dataclass(frozen=True)
class DroppedPerson:
    """A person the detector found but did not return. bbox (4,) [x, y, w, h] px."""

    image_index: int
    score: float
    bbox: np.ndarray
    reason: str


@dataclass
class DetectionResult:
    """people[i]: the people kept in image i, highest score first; dropped: those removed, with why."""

    people: list[list[DetectedPerson]]
    dropped: list[DroppedPerson] = field(default_factory=list)


@dataclass(frozen=True)
class Thresholds:
    """det_thr: minimum person score; kpt_thr and min_keypoints: a person needs at least
    ``min_keypoints`` keypoints with score >= kpt_thr (keypoint scores are returned unchanged);
    max_people: keep at most this many per image (highest scores), None = no limit;
    max_candidates: one-stage models only, candidates kept before NMS (bounds the decoding cost)."""

    det_thr: float = 0.3
    kpt_thr: float = 0.3
    min_keypoints: int = 4
    max_people: int | None = None
    max_candidates: int = 1000

    def __post_init__(self):
        if not 0.0 <= self.det_thr:
            raise InputError(f"det_thr must be >= 0, got {self.det_thr}")
        if not 0.0 <= self.kpt_thr:
            raise InputError(f"kpt_thr must be >= 0, got {self.kpt_thr}")
        if not 0 <= self.min_keypoints <= NUM_KEYPOINTS:
            raise InputError(f"min_keypoints must be in 0..{NUM_KEYPOINTS}, got {self.min_keypoints}")
        if self.max_people is not None and self.max_people < 0:
            raise InputError(f"max_people must be >= 0, got {self.max_people}")
        if self.max_candidates < 1:
            raise InputError(f"max_candidates must be >= 1, got {self.max_candidates}")


# --------------------------------------------------------------------------- building and loading


def _load_config(config: str | os.PathLike):
    from mmengine.config import Config

    path = Path(config)
    if not path.is_file():
        raise InputError(f"detector config not found: {path}")
    try:
        return Config.fromfile(str(path))
    except Exception as e:
        raise InputError(f"cannot read detector config {path}: {type(e).__name__}: {e}") from e


def load_weights_strict(model, checkpoint: str | os.PathLike) -> None:
    """Load ``checkpoint`` (read with weights_only=True) into ``model``; WeightsError on any mismatch.

    Buffers that are neither parameters nor batch-norm statistics are derived from the config and
    keep the model's values when the file lacks them; ``data_preprocessor.*`` keys are ignored
    (OpenMMLab's publish script strips them; mean/std come from the config).
    """
    from ..models.io import check_state_dict

    path = Path(checkpoint)
    if not path.is_file():
        raise DetectorWeightsError(f"detector checkpoint not found: {path}")
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith("data_preprocessor.")}
    expected = model.state_dict()
    params = {n for n, _ in model.named_parameters()}
    derived = [k for k in expected if k not in state and k not in params and not k.endswith(_BN_STATS)]
    for k in derived:
        state[k] = expected[k]
    if derived:
        logger.debug("%s: %d config-derived buffers taken from the model: %s", path, len(derived), derived)
    check_state_dict(model, state, where=str(path))
    model.load_state_dict(state, strict=True)


def _build_pose_model(config, checkpoint, device: str):
    from mmpose.apis import init_model

    cfg = _load_config(config) if not hasattr(config, "model") else config
    try:
        with warnings.catch_warnings():  # "metainfo config file ... will be used instead": expected
            warnings.filterwarnings("ignore", message=r"The metainfo config file")
            model = init_model(cfg, None, device="cpu")
    except Exception as e:
        raise InputError(f"cannot build the pose model from {config}: {type(e).__name__}: {e}") from e
    load_weights_strict(model, checkpoint)
    return model.to(device).eval()


def _build_person_model(config, checkpoint, device: str):
    from mmdet.apis import init_detector

    cfg = _load_config(config) if not hasattr(config, "model") else config
    try:
        model = init_detector(cfg, None, device="cpu")
    except Exception as e:
        raise InputError(f"cannot build the person detector from {config}: {type(e).__name__}: {e}") from e
    load_weights_strict(model, checkpoint)
    model.dataset_meta = {"classes": ("person",)}
    return model.to(device).eval()


# --------------------------------------------------------------------------- the detector


class KeypointDetector:
    """COCO-17 keypoint detector over batches of RGB images. Build with :meth:`from_name` or
    :meth:`from_files`; thresholds can be changed afterwards through :attr:`thresholds`."""

    def __init__(self, *, pose_model, person_model=None, name: str = "custom", device: str = "cpu",
                 thresholds: Thresholds | None = None, batch_size: int = 4):  # fmt: skip
        cfg_type = pose_model.cfg.model.type
        if person_model is None and cfg_type != "BottomupPoseEstimator":
            raise InputError(f"a {cfg_type} pose model needs a person detector (person config and checkpoint)")
        if person_model is not None and cfg_type != "TopdownPoseEstimator":
            raise InputError(f"a person detector was given but the pose model is a {cfg_type}, not top-down")
        if pose_model.dataset_meta.get("num_keypoints") != NUM_KEYPOINTS:
            raise InputError(f"the pose model outputs {pose_model.dataset_meta.get('num_keypoints')} keypoints; "
                             f"DPMesh needs the {NUM_KEYPOINTS} COCO keypoints")  # fmt: skip
        self.pose_model = pose_model
        self.person_model = person_model
        self.name = name
        self.device = str(device)
        self.thresholds = thresholds or Thresholds()
        self.batch_size = max(1, int(batch_size))

    @property
    def kind(self) -> str:
        return "bottomup" if self.person_model is None else "topdown"

    @classmethod
    def from_name(cls, name: str = DEFAULT_DETECTOR, weights_dir: str | os.PathLike | None = None,
                  device: str = "cpu", *, progress: bool = False, thresholds: Thresholds | None = None,
                  batch_size: int = 4) -> KeypointDetector:  # fmt: skip
        """A detector of :data:`~dpmesh_infer.detect.detectors.DETECTORS`, weights from the cache under
        ``<weights_dir>/detectors`` (downloaded on first use unless ``$DPMESH_NO_DOWNLOAD`` is set).
        ``weights_dir`` None: ``$DPMESH_WEIGHTS``, then the user cache."""
        from ..weights.resolve import resolve_weights_dir
        from .mmpose_compat import import_mmpose

        spec = get_spec(name)
        import_mmpose()
        wdir = resolve_weights_dir(weights_dir, must_exist=False).path
        ckpts = fetch_detector(name, wdir, progress=progress)
        pose_ckpt = ckpts[-1]
        person_model = None
        if spec.person is not None:
            person_model = _build_person_model(config_path(spec.person.config), ckpts[0], device)
        pose_model = _build_pose_model(config_path(spec.pose.config), pose_ckpt, device)
        return cls(pose_model=pose_model, person_model=person_model, name=name, device=device,
                   thresholds=thresholds, batch_size=batch_size)  # fmt: skip

    @classmethod
    def from_files(cls, config: str | os.PathLike, checkpoint: str | os.PathLike, device: str = "cpu", *,
                   person_config: str | os.PathLike | None = None,
                   person_checkpoint: str | os.PathLike | None = None,
                   thresholds: Thresholds | None = None, batch_size: int = 4) -> KeypointDetector:  # fmt: skip
        """Your own mmpose config + checkpoint (a one-stage model like RTMO), plus a mmdet person
        detector config + checkpoint for a top-down pose model."""
        from .mmpose_compat import import_mmpose

        if (person_config is None) != (person_checkpoint is None):
            raise InputError("give both the person detector config and its checkpoint, or neither")
        import_mmpose()
        person_model = None
        if person_config is not None:
            person_model = _build_person_model(person_config, person_checkpoint, device)
        pose_model = _build_pose_model(config, checkpoint, device)
        return cls(pose_model=pose_model, person_model=person_model, name=f"custom:{Path(config).name}",
                   device=device, thresholds=thresholds, batch_size=batch_size)  # fmt: skip

    # ----------------------------------------------------------------------- inference

    def __call__(self, images: Sequence[np.ndarray]) -> list[list[DetectedPerson]]:
        """Per image, the people kept (see :meth:`detect` for those dropped)."""
        return self.detect(images).people

    def detect(self, images: Sequence[np.ndarray]) -> DetectionResult:
        """Detect people in RGB uint8 images (H,W,3); batched over images (``batch_size`` per forward)."""
        bgr = [_to_bgr(im, i) for i, im in enumerate(images)]
        import torch

        raw: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        with torch.no_grad(), warnings.catch_warnings():
            # deprecation noise from mmdet/mmpose internals (torch.cuda.amp.autocast, meshgrid indexing)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message=r"torch\.meshgrid")
            for start in range(0, len(bgr), self.batch_size):
                chunk = bgr[start:start + self.batch_size]
                raw.extend(self._bottomup(chunk) if self.person_model is None else self._topdown(chunk))
        result = DetectionResult(people=[])
        for i, (kpts, kscores, boxes, scores) in enumerate(raw):
            h, w = bgr[i].shape[:2]
            boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()  # letterbox padding -> image
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
            kept, dropped = select_people(i, kpts, kscores, boxes, scores, self.thresholds)
            result.people.append(kept)
            result.dropped.extend(dropped)
        return result

    def _bottomup(self, images: list[np.ndarray]):
        from mmengine.dataset import Compose, pseudo_collate
        from mmengine.registry import DefaultScope

        model = self.pose_model
        with DefaultScope.overwrite_default_scope(model.cfg.get("default_scope", "mmpose")):
            pipeline = Compose(model.cfg.test_dataloader.dataset.pipeline)
            batch = pseudo_collate([pipeline(dict(img=im, **model.dataset_meta)) for im in images])
            saved = dict(model.test_cfg)
            model.test_cfg.update(score_thr=float(self.thresholds.det_thr), nms_pre=int(self.thresholds.max_candidates))
            try:
                samples = model.test_step(batch)
            finally:
                model.test_cfg.clear()
                model.test_cfg.update(saved)
        out = []
        for s in samples:
            p = s.pred_instances
            out.append((_np(p.keypoints), _np(p.keypoint_scores), _np(p.bboxes), _np(p.bbox_scores)))
        return out

    def _topdown(self, images: list[np.ndarray]):
        from mmengine.dataset import Compose, pseudo_collate
        from mmengine.registry import DefaultScope

        det = self.person_model
        with DefaultScope.overwrite_default_scope("mmdet"):
            steps = [dict(t) for t in det.cfg.test_dataloader.dataset.pipeline if t["type"] != "LoadAnnotations"]
            steps[0] = dict(type="mmdet.LoadImageFromNDArray")
            pipeline = Compose(steps)
            dets = det.test_step(pseudo_collate([pipeline(dict(img=im, img_id=i)) for i, im in enumerate(images)]))
        per_image_boxes = []
        for d in dets:
            p = d.pred_instances
            keep = _np(p.labels) == 0
            per_image_boxes.append((_np(p.bboxes)[keep], _np(p.scores)[keep]))

        model = self.pose_model
        with DefaultScope.overwrite_default_scope(model.cfg.get("default_scope", "mmpose")):
            pipeline = Compose(model.cfg.test_dataloader.dataset.pipeline)
            items, owner = [], []
            for i, (im, (boxes, scores)) in enumerate(zip(images, per_image_boxes)):
                for b, s in zip(boxes, scores):
                    if s < self.thresholds.det_thr:
                        continue  # reported as dropped by select_people; no pose needed
                    items.append(pipeline(dict(img=im, bbox=b[None].astype(np.float32),
                                               bbox_score=np.ones(1, np.float32), **model.dataset_meta)))
                    owner.append((i, b, s))
            poses = []
            for start in range(0, len(items), 64):
                poses.extend(model.test_step(pseudo_collate(items[start:start + 64])))
        out = []
        for i, (boxes, scores) in enumerate(per_image_boxes):
            low = scores < self.thresholds.det_thr
            mine = [(o, p) for o, p in zip(owner, poses) if o[0] == i]
            kp = np.zeros((len(boxes), NUM_KEYPOINTS, 2))
            ks = np.zeros((len(boxes), NUM_KEYPOINTS))
            for j, (_, p) in zip(np.flatnonzero(~low), mine):
                kp[j] = _np(p.pred_instances.keypoints)[0]
                ks[j] = _np(p.pred_instances.keypoint_scores)[0]
            out.append((kp, ks, boxes, scores))
        return out


def select_people(image_index: int, keypoints: np.ndarray, keypoint_scores: np.ndarray, boxes_xyxy: np.ndarray,
                  scores: np.ndarray, th: Thresholds) -> tuple[list[DetectedPerson], list[DroppedPerson]]:  # fmt: skip
    """Apply the thresholds to one image's raw detections (keypoints (N,17,2), keypoint_scores (N,17),
    boxes (N,4) xyxy, scores (N,)); returns (kept highest score first, dropped with reasons)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    kept: list[DetectedPerson] = []
    dropped: list[DroppedPerson] = []
    for n in order:
        x1, y1, x2, y2 = (float(v) for v in boxes_xyxy[n])
        bbox = np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float64)
        score = float(scores[n])
        kp = np.concatenate([np.asarray(keypoints[n], np.float64),
                             np.asarray(keypoint_scores[n], np.float64)[:, None]], 1)

        def drop(reason: str):
            dropped.append(DroppedPerson(image_index, score, bbox, reason))

        if score < th.det_thr:
            drop(f"person score {score:.3f} < det_thr {th.det_thr}")
        elif not (np.isfinite(kp).all() and np.isfinite(bbox).all()):
            drop("non-finite keypoints or box from the model")
        elif (n_ok := int((kp[:, 2] >= th.kpt_thr).sum())) < th.min_keypoints:
            drop(f"only {n_ok} of {NUM_KEYPOINTS} keypoints with score >= kpt_thr {th.kpt_thr} "
                 f"(need {th.min_keypoints})")  # fmt: skip
        elif th.max_people is not None and len(kept) >= th.max_people:
            drop(f"over max_people {th.max_people} (person score {score:.3f})")
        else:
            kept.append(DetectedPerson(keypoints=kp, bbox=bbox, score=score))
    return kept, dropped


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _to_bgr(image: np.ndarray, index: int) -> np.ndarray:
    im = np.asarray(image)
    if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8 or 0 in im.shape:
        raise InputError(f"image {index}: expected an RGB uint8 array (H, W, 3), got {im.shape} {im.dtype}")
    return np.ascontiguousarray(im[..., ::-1])


__all__ = [
    "DetectedPerson",
    "DetectionResult",
    "DroppedPerson",
    "KeypointDetector",
    "Thresholds",
    "load_weights_strict",
    "select_people",
]
