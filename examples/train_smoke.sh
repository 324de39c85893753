#!/usr/bin/env bash
# The whole training path on generated data, on a CPU, in minutes: synthetic dataset -> tiny-model
# training (teacher, then student with NKR) -> evaluation of the exported weights (run by Pipeline).
# Tiny random-init models and a synthetic stand-in body: it proves the path, not a model.
#
# Usage:  bash examples/train_smoke.sh [RUN_DIR]        (default: examples/out_train_smoke)
#   Set DPMESH="python -m dpmesh_infer.cli" to run without the console script; SMOKE_STEPS (default 4)
#   caps the steps per epoch, SMOKE_IMAGES (default 16) sizes the training split.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dpmesh=${DPMESH:-dpmesh}
run=${1:-$here/out_train_smoke}
steps=${SMOKE_STEPS:-4}
images=${SMOKE_IMAGES:-16}
mkdir -p "$run"

# 1. a synthetic dataset with exact 2D / 3D / SMPL labels (train and test splits)
$dpmesh data synthetic --out "$run/data" --train "$images" --test 4 --width 256 --height 192
# 2. a tiny training configuration (also writes a synthetic body model and H36M regressor)
$dpmesh train config --tiny --data "$run/data" --out "$run/train.json" --steps-per-epoch "$steps" --overwrite
# 3. train: teacher stage, then student stage with noisy keypoints + NKR; exports run/teacher, run/student
rm -rf "$run/train"
$dpmesh train dpmesh --config "$run/train.json" --out "$run/train" --device cpu --quiet
# 4. evaluate the student on the test split (MPJPE / PA-MPJPE / MPVE table + JSON)
$dpmesh evaluate --weights "$run/train/student" --data "$run/data" --split test --inputs gt \
    --out "$run/eval.json" --device cpu --quiet
echo "weights for dpmesh predict / Pipeline: $run/train/student; report: $run/eval.json"
