#!/usr/bin/env bash
# Create (or update) a local virtual environment with everything DUAL needs to run
# headless: Scipion's packages from PyPI, the plugin and its engine (editable), PyTorch
# 2.13.0 (CPU), pytest and ruff (the linter and formatter scripts/test.sh runs); and a
# second environment with the engine alone (PyTorch 2.13.0 and dual-engine, editable), as
# `scipion3 installb dual` makes one beside Scipion: the Scipion tests run the engine
# there (scripts/scipion_tests.py).
# Usage: bash scripts/setup.sh   (DUAL_VENV overrides .venv, DUAL_ENGINE_VENV .venv-engine)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DUAL_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check -q"
# torch first and pinned, so that nothing below pulls a multi-GB CUDA build.
$pip install torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
# scipion-em-reliontomo and scipion-em-dynamo: test-only, for the coordinate export
# chaining test (their converters need no RELION or Dynamo binaries).
$pip install -e ./dual/engine -e . pytest ruff==0.17.6 build twine scipion-app scipion-em-reliontomo scipion-em-dynamo 2>&1 | grep -v "^WARNING: Location" || true
"$venv/bin/python" -c "import torch, pwem, tomo, dual_engine; print('environment ready:', '$venv')"

engine=${DUAL_ENGINE_VENV:-.venv-engine}
[ -x "$engine/bin/python" ] || python3 -m venv "$engine"
epip="$engine/bin/python -m pip --disable-pip-version-check -q"
$epip install torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
$epip install -e ./dual/engine 2>&1 | grep -v "^WARNING: Location" || true
"$engine/bin/python" -c "import torch, dual_engine; print('engine environment ready:', '$engine')"
