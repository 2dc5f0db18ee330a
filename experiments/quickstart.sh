#!/usr/bin/env bash
# The main job. Sets up .venv, then trains a robust MNIST classifier with TRADES (L-inf eps 0.3,
# experiments/mnist_trades.yaml) for at most ADVTRAIN_MAX_TIME (default 12 minutes of training on
# 2 CPU cores), evaluates clean and robust accuracy on the 10k test images and prints them.
# MNIST is read from ADVTRAIN_DATA_DIR, else ../shared/datasets when it holds MNIST/raw, else
# downloaded into ./data. Extra arguments go to `advtrain fit`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/setup.sh
data_dir=${ADVTRAIN_DATA_DIR:-}
if [ -z "$data_dir" ]; then
  if [ -f ../shared/datasets/MNIST/raw/train-images-idx3-ubyte ]; then data_dir=../shared/datasets; else data_dir=data; fi
fi
exec .venv/bin/advtrain fit --config experiments/mnist_trades.yaml --data.data_dir "$data_dir" \
  --trainer.max_time "${ADVTRAIN_MAX_TIME:-00:00:12:00}" "$@"
