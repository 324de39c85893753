"""Videos: frames decoded with PyAV (or a folder of numbered frames), reconstructed chunk by chunk,
people tracked over time, motion smoothed, and exported as tracks (npz/json) and an animated, skinned
glTF that Blender imports as armatures with actions.

Modules (nothing heavy is imported before it is needed):

- :mod:`.decode` -- probing, sampling (``--fps/--every/--start/--end``) and streamed decoding;
- :mod:`.keypoints` -- per-frame keypoint files (COCO lists with ``frame``, mmpose ``frame_id``
  output, a folder of OpenPose JSONs);
- :mod:`.track` -- Hungarian association of per-frame persons into tracks (OKS + box IoU);
- :mod:`.smooth` -- One-Euro filtering of rotations (unit quaternions) and root positions, fixed
  betas per track;
- :mod:`.store` -- the resumable chunk store of a video run (atomic chunk files, ``manifest.jsonl``);
- :mod:`.tracks` -- assembling chunks into tracks and writing ``tracks.npz`` / ``tracks.json``;
- :mod:`.gltf` -- skinned SMPL meshes with animations (``scene.glb``) or a posed rig per person;
- :mod:`.encode` -- ``overlay.mp4`` / ``side.mp4`` written with PyAV;
- :mod:`.outputs` -- the final files of a run, assembled from its chunks (``tracks.json`` last);
- :mod:`.run` -- the whole video run.
"""
