#!/usr/bin/env bash
# Create .venv and install advtrain (editable) with its test extras. Re-running is cheap:
# it reinstalls only when pyproject.toml changed. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.advtrain-installed
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing advtrain and its dependencies into .venv (torch is a large download: a few minutes)..."
  .venv/bin/python -m pip install --upgrade pip
  .venv/bin/python -m pip install -e ".[test]"
  echo "$wanted" > "$stamp"
fi
