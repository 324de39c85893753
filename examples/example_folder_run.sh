#!/usr/bin/env bash
# Folder run on the example images with the example keypoints, then a resumed re-run.
#
# Usage:  bash examples/example_folder_run.sh [WEIGHTS_DIR]
#   WEIGHTS_DIR defaults to $DPMESH_WEIGHTS, then ~/.cache/dpmesh. Set DPMESH="python -m dpmesh_infer.cli"
#   to run without the console script.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dpmesh=${DPMESH:-dpmesh}
weights=()
if [[ $# -ge 1 ]]; then weights=(--weights "$1"); fi

[[ -f "$here/keypoints.json" ]] || python3 "$here/make_examples.py" --out "$here"

# one output folder per image: people.json, params.npz, person_NN.obj, scene.glb; plus manifest.jsonl
$dpmesh predict "$here/images" --keypoints "$here/keypoints.json" --out "$here/out_folder" "${weights[@]}" --quiet

# the same command again resumes: finished images are skipped (status "skipped" in the manifest)
$dpmesh predict "$here/images" --keypoints "$here/keypoints.json" --out "$here/out_folder" "${weights[@]}"

# --overwrite redoes every image, here with the camera from a 60 degree horizontal field of view
$dpmesh predict "$here/images" --keypoints "$here/keypoints.json" --out "$here/out_folder" "${weights[@]}" \
    --overwrite --fov 60 --quiet
tail -n 2 "$here/out_folder/manifest.jsonl"
