"""2D keypoint detectors (mmpose): the built-in detector table (:mod:`.detectors`), the detector
(:mod:`.mmpose_detector`), the compatibility layer of the OpenMMLab stack (:mod:`.mmpose_compat`) and
``dpmesh detect``'s runner (:mod:`.run`). Keypoint *files* are :mod:`dpmesh_infer.keypoint_files`.

Each module imports its heavy dependencies lazily.
"""
