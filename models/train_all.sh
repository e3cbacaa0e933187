#!/usr/bin/env bash
# Trains the shipped default model and the two matched baselines, one after another
# (the CPU is small: never in parallel). Logs in runs/<name>.log and runs/<name>/.
set -euo pipefail
cd "$(dirname "$0")"
EPOCHS=${EPOCHS:-6}
.venv/bin/python train.py --arch rgc_fmnist --epochs "$EPOCHS" --export rgc_fmnist.onnx > runs/rgc_fmnist.log 2>&1
.venv/bin/python train.py --arch ff_fmnist --epochs "$EPOCHS" --export baselines/ff_fmnist.onnx > runs/ff_fmnist.log 2>&1
.venv/bin/python train.py --arch simplernn_fmnist --epochs "$EPOCHS" --export baselines/simplernn_fmnist.onnx > runs/simplernn_fmnist.log 2>&1
