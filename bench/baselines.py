"""Baseline denoisers of the DUAL benchmark (paper, Table 1 and Table 2).

Every method takes a volume (numpy, [z, y, x], standardised float32: zero mean, unit
standard deviation, dense = bright as in the engine's phantoms) plus its parameters and
returns a float32 volume of the same shape. Nothing here is part of dual-engine's runtime:
bm4d, topaz-em and scikit-image are benchmark-only dependencies (bench/setup.sh).

Methods:
  identity              the raw tomogram ("None")
  gaussian              isotropic Gaussian smoothing, sigma in voxels
  anisotropic_diffusion 3-D Perona-Malik non-linear anisotropic diffusion (NAD)
  nlm                   non-local means (scikit-image's 3-D implementation)
  bm4d                  BM4D (the `bm4d` package), white-noise sigma
  topaz                 Topaz-Denoise 3-D pretrained U-Net (unet-3d-10a / unet-3d-20a)
References (ceilings, not competitors):
  noisefree_gaussian    Gaussian smoothing of the NOISE-FREE reconstruction
  train_supervised / supervised
                        a supervised 3-D U-Net (dual_engine.nets.UNet3D, the size of DUAL's
                        denoiser) trained with MSE on PAIRED (tomogram, grand model)
                        subvolumes of the training split
"""

import json
import os
import time

import numpy as np
from scipy import ndimage

from dual_engine.io import standardize


def _f32(volume):
    return np.asarray(volume, dtype=np.float32)


# --------------------------------------------------------------------------- classical


def identity(volume):
    return _f32(volume).copy()


def gaussian(volume, sigma):
    """Isotropic Gaussian smoothing; sigma in voxels ('reflect' borders)."""
    return ndimage.gaussian_filter(_f32(volume), float(sigma), mode="reflect")


def anisotropic_diffusion(volume, kappa, iterations, step=1.0 / 7.0, conduction="exp"):
    """3-D Perona-Malik diffusion (Perona & Malik 1990), explicit scheme.

    u <- u + step * sum over the 6 neighbours n of g(u_n - u) (u_n - u), with the
    conduction g(d) = exp(-(d / kappa)^2) ('exp', favours high-contrast edges) or
    1 / (1 + (d / kappa)^2) ('quadratic', favours wide regions). Zero-flux (Neumann)
    borders. g <= 1, so the scheme is stable for step <= 1/6; the default 1/7 keeps a
    margin. kappa is in the units of the (standardised) input.
    """
    if not 0 < step <= 1.0 / 6.0:
        raise ValueError("step must be in (0, 1/6] for a stable 3-D scheme, not %g" % step)
    if conduction not in ("exp", "quadratic"):
        raise ValueError("conduction must be 'exp' or 'quadratic'")
    u = _f32(volume).copy()
    k2 = np.float32(float(kappa) ** 2)
    step = np.float32(step)
    update = np.empty_like(u)
    for _ in range(int(iterations)):
        update.fill(0)
        for axis in range(3):
            d = np.diff(u, axis=axis)  # u[i+1] - u[i], on the n-1 faces
            if conduction == "exp":
                flux = np.exp(-(d * d) / k2) * d
            else:
                flux = d / (1 + (d * d) / k2)
            lower = [slice(None)] * 3
            upper = [slice(None)] * 3
            lower[axis] = slice(0, -1)
            upper[axis] = slice(1, None)
            update[tuple(lower)] += flux  # flux into voxel i from i+1
            update[tuple(upper)] -= flux  # and out of voxel i+1
        u += step * update
    return u


def nlm(volume, h, patch_size=3, patch_distance=5):
    """Non-local means: scikit-image's denoise_nl_means in 3-D (fast mode).

    h: the filtering strength (patch-distance cut-off) in units of the standardised
    input; patch_size: side of the cubic patches (voxels); patch_distance: the search
    window radius (voxels), i.e. a (2 d + 1)^3 window. sigma=0: h alone sets the strength.
    Cost grows with (2 patch_distance + 1)^3, independent of patch_size in fast mode.
    """
    from skimage.restoration import denoise_nl_means

    out = denoise_nl_means(
        _f32(volume),
        h=float(h),
        patch_size=int(patch_size),
        patch_distance=int(patch_distance),
        fast_mode=True,
        channel_axis=None,
    )
    return _f32(out)


def bm4d(volume, sigma, stages="all"):
    """BM4D (Maggioni et al. 2013; the `bm4d` package, profile 'np').

    sigma: standard deviation of the (assumed white) noise in input units. WBP noise is
    not white, so sigma is a free parameter tuned like the others rather than estimated.
    stages: 'all' (hard thresholding, then Wiener) or 'hard' (hard thresholding only).
    """
    import bm4d as _bm4d

    stage = _bm4d.BM4DStages.ALL_STAGES if stages == "all" else _bm4d.BM4DStages.HARD_THRESHOLDING
    out = _bm4d.bm4d(_f32(volume), float(sigma), profile="np", stage_arg=stage)
    return _f32(out)


def noisefree_gaussian(noisefree_volume, sigma):
    """Reference ceiling: Gaussian smoothing of the noise-free reconstruction (same
    optics, CTF and missing wedge as the tomogram, without the noise)."""
    return gaussian(noisefree_volume, sigma)


# --------------------------------------------------------------------------- Topaz

TOPAZ_MODELS = ("unet-3d-10a", "unet-3d-20a")
_TOPAZ_CACHE = {}


def _topaz_network(model):
    """Topaz's pretrained 3-D U-Net, loaded through its Python API (topaz.denoise)."""
    if model not in TOPAZ_MODELS:
        raise ValueError("Topaz model must be one of %s, not %r" % (TOPAZ_MODELS, model))
    if model not in _TOPAZ_CACHE:
        from topaz.denoise import Denoise3D

        _TOPAZ_CACHE[model] = Denoise3D(model, use_cuda=False, dims=3).model.eval()
    return _TOPAZ_CACHE[model]


class _PerTileStandardised:
    """Topaz's Denoise._denoise convention: each tile is standardised on its own before
    the network and the output is brought back to the tile's mean and std."""

    def __init__(self, network):
        self.network = network

    def __call__(self, x):
        mu, std = x.mean(), x.std()
        return self.network((x - mu) / std) * std + mu


def _yx_tiled(volume, network, core=128, overlap=16):
    """Run `network` on full-z tiles of (Z, core + 2 overlap, core + 2 overlap) voxels
    (reflect padding in y and x) and keep each tile's central core. Tomograms are thin
    in z, so full-z tiles cost less than cubic ones: no padded z to pay for."""
    import torch

    nz, ny, nx = volume.shape
    pad_y = -ny % core
    pad_x = -nx % core
    padded = np.pad(
        volume, ((0, 0), (overlap, overlap + pad_y), (overlap, overlap + pad_x)), mode="reflect"
    )
    out = np.empty(volume.shape, dtype=np.float32)
    with torch.no_grad():
        for y in range(0, ny, core):
            for x in range(0, nx, core):
                block = padded[:, y : y + core + 2 * overlap, x : x + core + 2 * overlap]
                result = network(torch.from_numpy(np.ascontiguousarray(block))[None, None])
                result = result[0, 0].numpy()
                h, w = min(core, ny - y), min(core, nx - x)
                out[:, y : y + h, x : x + w] = result[
                    :, overlap : overlap + h, overlap : overlap + w
                ]
    return out


def topaz(volume, model="unet-3d-10a", polarity="dark", core=128, overlap=16):
    """Topaz-Denoise 3-D with its pretrained weights (Bepler et al. 2020).

    polarity: the contrast the network is fed. The pretrained models were trained on
    real cryo-ET, where dense matter is dark; the engine's tomograms are dense = bright.
    'dark' negates the input before the network and negates the output back; 'bright'
    feeds the volume as it is. The result is always returned dense = bright.
    Inference: full-z tiles of 128 x 128 (y, x) plus a 16-voxel reflected margin that is
    discarded (Topaz's CLI uses zero-padded 96^3 patches with 48 voxels of padding,
    ~4x the compute of this tiling on a 64-voxel-thick tomogram: too slow on a 2-core
    CPU); each tile is standardised as in Topaz's own Denoise3D.
    """
    if polarity not in ("dark", "bright"):
        raise ValueError("polarity must be 'dark' or 'bright'")
    sign = np.float32(-1.0 if polarity == "dark" else 1.0)
    network = _PerTileStandardised(_topaz_network(model))
    out = _yx_tiled(sign * _f32(volume), network, core=core, overlap=overlap)
    return _f32(sign * out)


# --------------------------------------------------------------------------- supervised


def _paired_batch(rng, noisy, clean, weights, size, count):
    x = np.empty((count, 1, size, size, size), dtype=np.float32)
    y = np.empty_like(x)
    for i in range(count):
        k = rng.choice(len(noisy), p=weights)
        corner = [rng.integers(0, n - size + 1) for n in noisy[k].shape]
        box = tuple(slice(c, c + size) for c in corner)
        a, b = noisy[k][box], clean[k][box]
        flips = tuple(axis for axis in range(3) if rng.random() < 0.5)
        if flips:  # the same flips on both: the pair stays aligned
            a, b = np.flip(a, flips), np.flip(b, flips)
        x[i, 0], y[i, 0] = a, b
    return x, y


def train_supervised(
    noisy_paths,
    clean_paths,
    out_path,
    minutes=10.0,
    width=16,
    depth=2,
    size=32,
    batch_size=4,
    lr=1e-3,
    seed=0,
    voxel_size=10.0,
    max_iterations=None,
    log=print,
):
    """Train the supervised ceiling: UNet3D(width, depth) with MSE on random PAIRED
    size^3 subvolumes (tomogram k, grand model k), same corner and flips in both.

    noisy_paths[k] and clean_paths[k] must be the two volumes of one phantom. Volumes are
    read like DUAL reads them (dual_engine.data.load_for_model: working voxel size,
    standardised). AdamW (lr, default betas), training stops after `minutes` of wall
    time (or max_iterations). Writes out_path (torch file) and returns its summary.
    """
    import torch
    from dual_engine.data import load_for_model
    from dual_engine.nets import UNet3D, orthogonal_init

    if len(noisy_paths) != len(clean_paths) or not noisy_paths:
        raise ValueError("need one grand model per tomogram (paired training)")
    noisy = [load_for_model(p, voxel_size)[0] for p in noisy_paths]
    clean = [load_for_model(p, voxel_size)[0] for p in clean_paths]
    for a, b, p in zip(noisy, clean, noisy_paths):
        if a.shape != b.shape:
            raise ValueError("%s and its grand model differ in shape" % p)
    counts = np.array([np.prod([n - size + 1 for n in v.shape]) for v in noisy], float)
    weights = counts / counts.sum()

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = orthogonal_init(UNet3D(width, depth))
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    started = time.perf_counter()
    deadline = started + 60.0 * float(minutes)
    iteration, history, running = 0, [], []
    net.train()
    while time.perf_counter() < deadline and (max_iterations is None or iteration < max_iterations):
        x, y = _paired_batch(rng, noisy, clean, weights, size, batch_size)
        loss = torch.nn.functional.mse_loss(net(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        iteration += 1
        running.append(loss.item())
        if iteration % 50 == 0:
            history.append(
                {
                    "iteration": iteration,
                    "mse": float(np.mean(running)),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            running = []
            if log and iteration % 250 == 0:
                log(
                    "  supervised U-Net: iteration %d, mse %.4f, %.0f s"
                    % (iteration, history[-1]["mse"], history[-1]["seconds"])
                )
    summary = {
        "iterations": iteration,
        "seconds": round(time.perf_counter() - started, 1),
        "minutes_budget": float(minutes),
        "width": int(width),
        "depth": int(depth),
        "subvolume_size": int(size),
        "batch_size": int(batch_size),
        "lr": float(lr),
        "seed": int(seed),
        "voxel_size": float(voxel_size),
        "noisy": [os.fspath(p) for p in noisy_paths],
        "clean": [os.fspath(p) for p in clean_paths],
        "history": history,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".tmp"
    torch.save({"state_dict": net.state_dict(), "summary": summary}, tmp)
    os.replace(tmp, out_path)
    return summary


def load_supervised(model_path):
    import torch
    from dual_engine.nets import UNet3D

    state = torch.load(model_path, map_location="cpu", weights_only=True)
    summary = state["summary"]
    net = UNet3D(summary["width"], summary["depth"])
    net.load_state_dict(state["state_dict"])
    return net.eval(), summary


def supervised(volume, model_path, tile=64, overlap=16):
    """Apply the supervised U-Net (overlap-tile, as DUAL's own inference)."""
    import torch
    from dual_engine.infer import apply_tiled

    net, _ = load_supervised(model_path)
    with torch.no_grad():
        out = apply_tiled(
            standardize(volume), net, tile=tile, overlap=overlap, multiple=net.multiple
        )
    return _f32(out)


def describe():
    """A JSON-able one-line description of every method (for the results files)."""
    return {
        "none": "raw tomogram",
        "gaussian": "scipy.ndimage.gaussian_filter, sigma (voxels)",
        "nad": "3-D Perona-Malik, exp conduction, explicit step 1/7, kappa and iterations",
        "nlm": "skimage.restoration.denoise_nl_means (fast mode, 3-D), h, patch, search radius",
        "bm4d": "bm4d package (profile 'np', both stages), white-noise sigma",
        "topaz": "topaz-em pretrained 3-D U-Net via topaz.denoise.Denoise3D, polarity",
        "noisefree_gaussian": "reference: noise-free reconstruction + Gaussian sigma",
        "supervised": "reference: UNet3D of DUAL's denoiser size, MSE on paired subvolumes",
    }


if __name__ == "__main__":
    print(json.dumps(describe(), indent=1))
