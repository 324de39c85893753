"""Typer commands of ``dpmesh data``: ``convert coco|crowdpose|3dpw|amass`` (and the synthetic generator).

``app`` is mounted on the main ``dpmesh`` app as ``data``. The converters are imported inside the
commands, so ``dpmesh --help`` stays instant. Errors are DpmeshError subclasses (DatasetError: exit
code 2): the message is printed, not a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .common import handle_errors, say_ok

app = typer.Typer(no_args_is_help=True,
                       help="Training/evaluation data: convert public datasets into the dpmesh format "
                            "(docs/DATA.md).")
convert_app = typer.Typer(no_args_is_help=True,
                          help="Convert a public dataset's annotations into a dpmesh dataset directory.")
app.add_typer(convert_app, name="convert")

_IMAGES_HELP = "Folder the annotation file's image paths are relative to (stored as the image root; never copied)."
_OUT_HELP = "Dataset directory to write (dataset.json + annotations/<split>.jsonl)."
_SPLIT_HELP = "Output split name (default: from the file name: train, val, validation, test, trainval)."
_CHECK_HELP = "Fail unless every referenced image file exists."
_OVERWRITE_HELP = "Replace a dataset already in --out."
_MIN_KP_HELP = "Skip persons with fewer labelled (v>0) keypoints (1 = 3DCrowdNet's rule)."
_FIT_HELP = "Mark NeuralAnnot fits with fit_err above this as smpl.valid=false (kept, not supervised)."


@convert_app.command("coco")
@handle_errors
def convert_coco_cmd(
    annotations: Path = typer.Argument(..., metavar="ANNOTATIONS", help="person_keypoints_{train,val}2017.json"),
    images: Path = typer.Option(..., "--images", help=_IMAGES_HELP + " E.g. coco/train2017."),
    out: Path = typer.Option(..., "--out", "-o", help=_OUT_HELP),
    neuralannot: Optional[Path] = typer.Option(None, "--neuralannot", help="MSCOCO_train_SMPL_NeuralAnnot.json "
                                               "(SMPL pseudo-GT keyed by annotation id)."),
    split: Optional[str] = typer.Option(None, "--split", help=_SPLIT_HELP),
    min_keypoints: int = typer.Option(1, "--min-keypoints", help=_MIN_KP_HELP),
    max_fit_err: Optional[float] = typer.Option(None, "--max-fit-err", help=_FIT_HELP),
    check_images: bool = typer.Option(False, "--check-images", help=_CHECK_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name (default coco-<split>)."),
) -> None:
    """COCO keypoints (+ NeuralAnnot SMPL) -> dpmesh dataset."""
    from ..data.converters import convert_coco

    say_ok(convert_coco(annotations, out, images=images, neuralannot=neuralannot, split=split,
                     min_keypoints=min_keypoints, max_fit_err=max_fit_err, check_images=check_images,
                     overwrite=overwrite, name=name).summary())


@convert_app.command("crowdpose")
@handle_errors
def convert_crowdpose_cmd(
    annotations: Path = typer.Argument(..., metavar="ANNOTATIONS", help="crowdpose_{train,val,test,trainval}.json"),
    images: Path = typer.Option(..., "--images", help=_IMAGES_HELP + " E.g. CrowdPose/images."),
    out: Path = typer.Option(..., "--out", "-o", help=_OUT_HELP),
    neuralannot: Optional[Path] = typer.Option(None, "--neuralannot", help="CrowdPose_{split}_SMPL_NeuralAnnot.json."),
    split: Optional[str] = typer.Option(None, "--split", help=_SPLIT_HELP),
    min_keypoints: int = typer.Option(1, "--min-keypoints", help=_MIN_KP_HELP),
    max_fit_err: Optional[float] = typer.Option(None, "--max-fit-err", help=_FIT_HELP),
    size: str = typer.Option("auto", "--size", help="Image width/height (some CrowdPose files have them swapped): "
                             "auto (decide from the keypoints), json, swap, or image (read the image files)."),
    check_images: bool = typer.Option(False, "--check-images", help=_CHECK_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name (default crowdpose-<split>)."),
) -> None:
    """CrowdPose keypoints (+ NeuralAnnot SMPL) -> dpmesh dataset."""
    from ..data.converters import convert_crowdpose

    say_ok(convert_crowdpose(annotations, out, images=images, neuralannot=neuralannot, split=split,
                          min_keypoints=min_keypoints, max_fit_err=max_fit_err, size=size,
                          check_images=check_images, overwrite=overwrite, name=name).summary())


@convert_app.command("3dpw")
@handle_errors
def convert_3dpw_cmd(
    annotations: Path = typer.Argument(..., metavar="ANNOTATIONS", help="3DPW_latest_{train,validation,test}.json "
                                       "(3DCrowdNet), 3DPW_{split}.json (I2L-MeshNet) or 3DPW_oc/pc.json."),
    images: Path = typer.Option(..., "--images", help=_IMAGES_HELP + " The 3DPW imageFiles folder."),
    out: Path = typer.Option(..., "--out", "-o", help=_OUT_HELP),
    split: Optional[str] = typer.Option(None, "--split", help=_SPLIT_HELP),
    oc: Optional[Path] = typer.Option(None, "--oc", help="3DPW_oc.json: tag its persons 3dpw-oc."),
    pc: Optional[Path] = typer.Option(None, "--pc", help="3DPW_pc.json: tag its persons 3dpw-pc."),
    detections: Optional[Path] = typer.Option(None, "--detections", help="Input keypoints keyed by annotation id, "
                                              "e.g. 3DPW_validation_crowd_hhrnet_result.json (replace OpenPose)."),
    tag: List[str] = typer.Option([], "--tag", help="Extra tag for every image and person (repeatable)."),
    check_images: bool = typer.Option(False, "--check-images", help=_CHECK_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
    name: Optional[str] = typer.Option(None, "--name", help="Dataset name (default 3dpw-<split>)."),
) -> None:
    """3DPW (3DCrowdNet/I2L-MeshNet JSON) -> dpmesh dataset with GT SMPL, camera, OpenPose inputs, subset tags."""
    from ..data.converters import convert_3dpw

    say_ok(convert_3dpw(annotations, out, images=images, split=split, oc=oc, pc=pc, detections=detections, tags=tag,
                     check_images=check_images, overwrite=overwrite, name=name).summary())


@convert_app.command("amass")
@handle_errors
def convert_amass_cmd(
    src: Path = typer.Argument(..., metavar="AMASS_DIR", help="Folder of AMASS .npz files (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write (<relative path>.npz + summary.json); "
                             "train with `dpmesh train vqvae --poses OUT`."),
    fps: float = typer.Option(30.0, "--fps", help="Target frame rate: keep every round(source fps / fps)-th frame."),
    zero_hands: bool = typer.Option(False, "--zero-hands", help="Zero SMPL joints 22/23 instead of copying columns "
                                    "66:72 (those are finger joints in SMPL+H files)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a conversion already in --out."),
) -> None:
    """AMASS motion files -> compact SMPL pose set (T,72) for VQ-VAE pre-training."""
    from ..data.converters import convert_amass

    result = convert_amass(src, out, target_fps=fps, zero_hands=zero_hands, overwrite=overwrite)
    say_ok(result.summary())


# ---------------------------------------------------------------------------------------- synthetic


@app.command("synthetic")
@handle_errors
def synthetic_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write (images/, annotations/, "
                             "dataset.json)."),
    train: int = typer.Option(64, "--train", help="Images in the 'train' split."),
    test: int = typer.Option(16, "--test", help="Images in the 'test' split (0 = none)."),
    min_people: int = typer.Option(1, help="Fewest people per image."),
    max_people: int = typer.Option(3, help="Most people per image."),
    width: int = typer.Option(320, help="Image width, pixels."),
    height: int = typer.Option(240, help="Image height, pixels."),
    seed: int = typer.Option(0, help="Same seed, byte-identical dataset."),
    smpl: Optional[Path] = typer.Option(None, "--smpl", help="Weights or SMPL folder with SMPL_NEUTRAL.npz; "
                                        "default: the built-in synthetic stand-in body (NOT SMPL)."),
) -> None:
    """Generate a small synthetic dataset with exact 2D/3D/SMPL labels (tests, smoke runs of training)."""
    from ..data.synthetic import generate_synthetic_dataset

    splits = {"train": train, **({"test": test} if test else {})}
    path = generate_synthetic_dataset(out, splits=splits, persons_per_image=(min_people, max_people),
                                      image_size=(width, height), seed=seed, smpl=smpl)
    say_ok(f"wrote {path} ({', '.join(f'{k}: {v} images' for k, v in splits.items())}); "
        f"body model: {'SMPL from ' + str(smpl) if smpl else 'synthetic stand-in'}")
