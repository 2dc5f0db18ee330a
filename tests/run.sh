#!/usr/bin/env bash
# The test suite (what CI runs): sets up .venv if needed, then runs pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash experiments/setup.sh
exec .venv/bin/python -m pytest "$@"
