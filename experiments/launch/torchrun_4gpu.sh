#!/usr/bin/env bash
# CIFAR-10 PGD-AT on one machine with 4 GPUs, started by torchrun (Lightning picks up its
# environment). Plain `advtrain fit ... --trainer.devices 4 --trainer.strategy ddp` works too:
# Lightning then starts the 4 processes itself. `--ckpt_path last` resumes an interrupted
# run in the same root dir (ROOT, default runs/torchrun); SIGTERM saves last.ckpt and exits 143.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/torchrun --standalone --nproc_per_node 4 -m experiments.cli fit --config experiments/cifar10_pgd_at.yaml \
  --data.data_dir "${DATA_DIR:-data}" --trainer.accelerator gpu --trainer.devices 4 \
  --trainer.strategy ddp --trainer.sync_batchnorm true \
  --trainer.default_root_dir "${ROOT:-runs/torchrun}" --ckpt_path last "$@"
