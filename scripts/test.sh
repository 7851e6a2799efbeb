#!/usr/bin/env bash
# Set up the environment and run every test (engine and Scipion protocols), on CPU.
# Usage: bash scripts/test.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${DUAL_VENV:-.venv}
exec "$venv/bin/python" -m pytest "$@"
