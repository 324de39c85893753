"""Converters from public annotation formats into the dpmesh dataset format (:mod:`.format`).

=============  =========================================================  ===================================
converter      reads                                                      writes
=============  =========================================================  ===================================
convert_coco   person_keypoints_{train,val}2017.json                      dataset (J30 keypoints, bbox, SMPL)
               + MSCOCO_train_SMPL_NeuralAnnot.json (optional)
convert_       crowdpose_{train,val,test,trainval}.json                   dataset (as COCO)
crowdpose      + CrowdPose_{split}_SMPL_NeuralAnnot.json (optional)
convert_3dpw   3DPW_latest_{split}.json (3DCrowdNet) / 3DPW_{split}.json  dataset (GT SMPL in camera frame,
               + 3DPW_oc.json / 3DPW_pc.json / detections (optional)      camera, OpenPose inputs, tags)
convert_amass  AMASS *.npz (recursive)                                    OUT/**/*.npz poses (T,72) + summary
=============  =========================================================  ===================================

Every converter keeps the source data raw (no filtering of SMPL parameters, no image copies: the
dataset's image root points at the given image folder) and returns a result with a one-line
``summary()``. Problems with the inputs raise :class:`~dpmesh_infer.data.format.DatasetError`
naming the file and the entry. User documentation: docs/DATA.md; CLI: ``dpmesh data convert``.
"""

from __future__ import annotations

from .convert_3dpw import PW3D_CROWD_SEQUENCES, convert_3dpw
from .convert_amass import AmassConversionResult, convert_amass
from .convert_coco import CROWDPOSE14_NAMES, SIZE_MODES, convert_coco, convert_crowdpose, crowdpose14_to_j30
from .convert_common import ConversionResult

__all__ = [
    "AmassConversionResult", "ConversionResult", "CROWDPOSE14_NAMES", "PW3D_CROWD_SEQUENCES", "SIZE_MODES",
    "convert_3dpw", "convert_amass", "convert_coco", "convert_crowdpose", "crowdpose14_to_j30",
]
