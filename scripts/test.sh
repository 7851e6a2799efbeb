#!/usr/bin/env bash
# Set up the environments, lint (ruff), build and check the packages, and run every test
# (engine and benchmark with pytest, then the Scipion protocols with pyworkflow's runner)
# on CPU.
# Usage: bash scripts/test.sh [pytest options, for the engine and benchmark tests]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv=${DUAL_VENV:-.venv}
# Lint and format first (configured in pyproject.toml): a finding fails the run.
"$venv/bin/ruff" check .
"$venv/bin/ruff" format --check .
# The packages as PyPI would get them: built, checked, complete.
bash scripts/check_package.sh
# The engine's and the benchmark's tests (pytest; testpaths in pyproject.toml).
"$venv/bin/python" -m pytest "$@"
# The plugin's Scipion tests as `scipion3 tests --grep dual --run` runs them: pyworkflow's
# runner, the engine in its own environment (.venv-engine), never in Scipion's Python.
"$venv/bin/python" scripts/scipion_tests.py
