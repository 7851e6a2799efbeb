#!/usr/bin/env bash
# Set up the environment, lint (ruff), build and check the packages, and run every test
# (engine and Scipion protocols) on CPU.
# Usage: bash scripts/test.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${DUAL_VENV:-.venv}
# Lint and format first (configured in pyproject.toml): a finding fails the run.
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
# The packages as PyPI would get them: built, checked, complete.
bash scripts/check_package.sh
exec "$venv/bin/python" -m pytest "$@"
