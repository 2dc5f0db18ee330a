#!/usr/bin/env bash
# The test suite (what CI runs): sets up .venv if needed, then runs pytest. Extra args go to pytest.
# Tests run in parallel, one pytest worker per CPU core, each file on one worker (`-n 0` runs them
# in this process). Every process is single-threaded (OMP_NUM_THREADS=1 also reaches the advtrain
# and DDP subprocesses the tests start): threads beyond the cores make torch's OpenMP pools spin
# against each other, several times slower.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec .venv/bin/python -m pytest -n auto --dist loadfile "$@"
