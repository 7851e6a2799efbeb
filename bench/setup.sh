#!/usr/bin/env bash
# Install the benchmark-only dependencies into the CURRENT Python environment
# (activate your venv first). They are NOT runtime requirements of dual-engine.
#
#   source /path/to/venv/bin/activate
#   bash bench/setup.sh
#
# What it installs, and why each one the way it does:
#   bm4d          BM4D baseline; its wheel ships the compiled library. Installed with
#                 --no-deps: it declares scipy>=1.13 but runs on scipy 1.10 (checked
#                 below), and we must not let pip replace numpy/scipy.
#   PyWavelets    bm4d's one real extra dependency.
#   topaz-em      Topaz-Denoise 3-D with its pretrained unet-3d-10a / unet-3d-20a weights
#                 (inside the wheel). --no-deps keeps our torch; its Python API
#                 (topaz.denoise.Denoise3D) needs none of torchvision/pandas/sklearn.
#   tqdm, future  small pure-Python deps some topaz modules import.
#   setuptools<81 topaz's loader falls back to pkg_resources (removed in setuptools 81)
#                 when importlib.resources cannot open its weights (Python < 3.12).
#   scikit-image  only for skimage.restoration.denoise_nl_means (NLM baseline); installed
#                 only if missing, with --no-deps.
# Every step uses --no-deps so numpy, scipy and torch stay exactly as they are; the
# script checks their versions before and after and fails if anything moved.
set -euo pipefail

PY=${PYTHON:-python}
PIP="$PY -m pip"

versions() {
    $PY - <<'EOF'
import importlib
for name in ("numpy", "scipy", "torch"):
    try:
        print(name, importlib.import_module(name).__version__)
    except ImportError:
        print(name, "missing")
EOF
}

before=$(versions)
echo "$before"

$PIP install --no-deps "bm4d==4.2.5" "PyWavelets>=1.4,<1.9"
$PIP install --no-deps "topaz-em==0.3.20" "tqdm>=4.65" "future"
$PIP install --no-deps "setuptools<81"
if ! $PY -c "import skimage.restoration" 2>/dev/null; then
    $PIP install --no-deps "scikit-image>=0.21,<0.26" "lazy_loader>=0.3" "imageio>=2.27" \
        "tifffile>=2022.8.12" "networkx>=2.8"
fi

after=$(versions)
if [ "$before" != "$after" ]; then
    echo "ERROR: numpy/scipy/torch changed during the install:" >&2
    echo "before: $before" >&2
    echo "after:  $after" >&2
    exit 1
fi

# Smoke test: Topaz's two pretrained 3-D models load through its Python API and run on
# CPU without torchvision; BM4D and NLM run on a tiny volume.
$PY - <<'EOF'
import importlib.util, sys
import numpy as np
import torch
torch.set_num_threads(1)
from topaz.denoise import Denoise3D
rng = np.random.default_rng(0)
vol = rng.normal(size=(32, 32, 32)).astype(np.float32)
for name in ("unet-3d-10a", "unet-3d-20a"):
    model = Denoise3D(name, use_cuda=False, dims=3)
    out = model.denoise(vol, patch_size=32, padding=16, verbose=False)
    assert out.shape == vol.shape and np.all(np.isfinite(out)), name
    print("topaz", name, "ok: output std %.3f" % out.std())
import bm4d
out = bm4d.bm4d(vol[:16, :16, :16], 1.0)
assert np.all(np.isfinite(out))
print("bm4d", bm4d.__name__, "ok")
from skimage.restoration import denoise_nl_means
out = denoise_nl_means(vol[:16, :16, :16], h=0.5, patch_size=3, patch_distance=3,
                       channel_axis=None, fast_mode=True)
print("skimage nl-means ok")
print("torchvision installed:", importlib.util.find_spec("torchvision") is not None)
EOF
echo "$after"
echo "bench dependencies OK"
