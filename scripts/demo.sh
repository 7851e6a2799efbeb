#!/usr/bin/env bash
# Set up the environment and run the main job on the built-in phantom dataset.
# Usage: bash scripts/demo.sh [demo.py options]   (outputs in ./demo-output)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${DUAL_VENV:-.venv}
exec "$venv/bin/python" scripts/demo.py "$@"
