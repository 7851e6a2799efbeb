#!/usr/bin/env bash
# Build the plugin's sdist and wheel (the wheel from the sdist, as PyPI users get it)
# and the engine's, check their metadata with `twine check --strict`, and check that
# the wheel carries everything `scipion3 installb dual` and Scipion need: the engine's
# sources and pyproject.toml, the template, protocols.conf and the icon.
# Usage: bash scripts/check_package.sh   (after scripts/setup.sh; CI runs it)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${DUAL_VENV:-.venv}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$venv/bin/python" -m build --no-isolation --outdir "$out/plugin" . >"$out/build.log" 2>&1 ||
    { cat "$out/build.log"; exit 1; }
"$venv/bin/python" -m build --no-isolation --outdir "$out/engine" dual/engine >>"$out/build.log" 2>&1 ||
    { cat "$out/build.log"; exit 1; }
if grep -q "WARNING\|deprecated" "$out/build.log"; then
    grep -B2 -A6 "WARNING\|deprecated" "$out/build.log"
    exit 1
fi
"$venv/bin/twine" check --strict "$out"/plugin/* "$out"/engine/*
"$venv/bin/python" - "$out"/plugin/*.whl <<'PY'
import glob
import sys
import zipfile

names = set(zipfile.ZipFile(sys.argv[1]).namelist())
needed = {
    'dual/protocols.conf',
    'dual/icon.png',
    'dual/templates/denoise_pick.json.template',
    'dual/engine/pyproject.toml',
    'dual/engine/README.md',
}
needed |= set(glob.glob('dual/engine/dual_engine/**/*.py', recursive=True))
missing = sorted(needed - names)
if missing:
    sys.exit('The wheel misses: ' + ', '.join(missing))
print('wheel: %d files, the engine and the plugin data included' % len(names))
PY
