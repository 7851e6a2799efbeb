"""`dual-engine pick`: template-free particle picking by Difference of Gaussians (DoG).

The DUAL paper ("Template-free particle picking", after Pei et al. 2016) filters the
tomogram with DoG = G(sigma1) - G(sigma2), sigma2 = 1.1 sigma1, takes local maxima,
suppresses maxima closer than 24 nm to a better one and keeps the top 500; for ~28 nm
yeast ribosomes at 1 nm voxels it used sigma1 = 8.0 nm. This module implements that
recipe with the parameters derived from the particle diameter.

Conventions (all lengths given to the public functions are in Angstrom):
- sigma1 = radius / sqrt(3), radius = diameter / 2. For a ball of radius R the
  scale-normalised Laplacian-of-Gaussian response at its centre, proportional to
  u^3 exp(-u^2 / 2) with u = R / sigma, peaks at u = sqrt(3); DoG with k = 1.1 is that
  Laplacian to first order in (k - 1). For a 280 A ribosome this gives 80.8 A, the
  paper's 8.0 nm. sigma2 = SIGMA_RATIO * sigma1 = 1.1 sigma1.
- polarity 'bright': particles are denser = brighter than the background (the
  engine's phantoms and DUAL's outputs); 'dark': particles are darker (raw
  reconstructions), the volume is negated first; 'auto': measured on the tomogram
  (measured_polarity): particles are rare, strong blobs at the DoG's scale, so the
  DoG response is skewed towards their sign (measured on phantoms: skewness +0.46 to
  +1.8 for reconstructions at SNR ~0.1, the same with the opposite sign inverted);
  below POLARITY_MIN_SKEW the contrast is unclear and `fallback_polarity` is used.
- the volume is standardised (zero mean, unit standard deviation) before filtering, so
  the score of a pick, the DoG value at its peak voxel, is in units of the input's
  standard deviation and does not depend on the tomogram's grey scale. A constant
  volume, or a margin that leaves no room, is refused (InputError).
- peaks are voxels equal to the maximum of their 3x3x3 neighbourhood whose DoG is
  above PEAK_FLOOR times the largest DoG value (this drops flat background and FFT
  round-off plateaus); each position is refined to sub-voxel precision with a
  three-point parabola along each axis (offset at most half a voxel).
- margin (default MARGIN_FRACTION x the diameter): peaks whose voxel lies closer than `margin` to
  a face of the volume are dropped, i.e. kept when margin <= i <= n - 1 - margin on
  every axis; refined positions stay inside that box.
- mask: peaks are kept only where mask > 0.5 (at the peak voxel).
- margin and mask are applied before non-maximum suppression, so a rejected peak never
  suppresses a kept one. Suppression is greedy in decreasing score: a candidate within
  min_distance (inclusive) of a better kept pick is dropped. Default min_distance =
  NMS_FRACTION * diameter (one radius; the paper used 24 nm for 28 nm ribosomes, which
  in a crowded set drops touching neighbours: see contract.NMS_FRACTION); kept picks
  are thus never closer than min_distance.
- selection: score >= threshold when a threshold is given, then at most `top` picks
  (default DEFAULT_TOP = 500 when neither is given).
Returned coordinates are (x, y, z) voxels of the input volume (array [z, y, x]),
ordered by decreasing score.

Speed: the two Gaussians are one linear filter, applied either in real space
(scipy.ndimage.gaussian_filter, cost proportional to sigma) or by one real FFT of the
volume padded by symmetric reflection (the boundary rule of gaussian_filter's
'reflect' mode) by 4 sigma2, multiplied by exp(-2 pi^2 s1^2 f^2) - exp(-2 pi^2 s2^2 f^2)
(cost independent of sigma), which is faster at the particle scales of picking.
method='auto' therefore takes the FFT, except when sigma2 < FFT_MIN_SIGMA voxels: there
the continuous Gaussian transfer function no longer matches the sampled kernel (10%
apart at sigma 0.8) and the real-space filter is cheap.
"""

import json
import math
import os
import sys
import time

import numpy as np
from scipy import fft as sfft
from scipy import ndimage
from scipy.spatial import cKDTree

from dual_engine.contract import (
    AUTO_POLARITY,
    DEFAULT_TOP,
    DYNAMO_SUFFIX,
    MARGIN_FRACTION,
    NMS_FRACTION,
    PICK_FORMATS,
    PICK_SUMMARY_SUFFIX,
    PICKS_SUFFIX,
    POLARITIES,
    POLARITY_MIN_SKEW,
    STAR_SUFFIX,
    InputError,
    check_diameter,
    check_outputs,
    check_tomo_name,
    polarity_text,
)
from dual_engine.io import check_finite, read_mrc

SIGMA_RATIO = 1.1  # sigma2 / sigma1 (paper, after Voss et al. 2009)
SIGMA_PER_RADIUS = 1.0 / math.sqrt(3.0)
PEAK_FLOOR = 1e-4  # peaks need DoG > PEAK_FLOOR * max(DoG)
TRUNCATE = 4.0  # Gaussian support (sigmas), real-space and FFT padding
FFT_MIN_SIGMA = 1.5  # voxels (sigma2): real-space filter below
METHODS = ("auto", "fft", "spatial")
POLARITY_SAMPLES = 2_000_000  # DoG values the skewness is measured on (a regular subsample)


def dog_sigmas(diameter, voxel_size):
    """(sigma1, sigma2) in voxels for particles of `diameter` A at `voxel_size` A/voxel."""
    radius = 0.5 * float(diameter) / float(voxel_size)
    sigma1 = radius * SIGMA_PER_RADIUS
    return sigma1, SIGMA_RATIO * sigma1


def _gaussian_transfer(n, sigma, real=False):
    f = sfft.rfftfreq(n) if real else sfft.fftfreq(n)
    return np.exp(-2.0 * (np.pi * sigma * f) ** 2).astype(np.float32)


def _dog_fft(volume, sigma1, sigma2, workers, offset):
    pad = int(math.ceil(TRUNCATE * sigma2))
    shape = volume.shape
    padded_shape = [sfft.next_fast_len(n + 2 * pad, real=True) for n in shape]
    widths = [(pad, p - n - pad) for n, p in zip(shape, padded_shape)]
    padded = np.pad(volume, widths, mode="symmetric")
    if offset:
        padded -= np.float32(offset)
    spectrum = sfft.rfftn(padded, workers=workers, overwrite_x=True)
    del padded
    pz, py, px = padded_shape
    g1z, g2z = _gaussian_transfer(pz, sigma1), _gaussian_transfer(pz, sigma2)
    g1yx = np.outer(_gaussian_transfer(py, sigma1), _gaussian_transfer(px, sigma1, real=True))
    g2yx = np.outer(_gaussian_transfer(py, sigma2), _gaussian_transfer(px, sigma2, real=True))
    for i in range(pz):  # slab by slab: no full-size transfer array
        spectrum[i] *= g1z[i] * g1yx - g2z[i] * g2yx
    out = sfft.irfftn(spectrum, s=padded_shape, workers=workers, overwrite_x=True)
    del spectrum
    crop = tuple(slice(pad, pad + n) for n in shape)
    return np.ascontiguousarray(out[crop], dtype=np.float32)


def _dog_spatial(volume, sigma1, sigma2, offset):
    if offset:
        volume = volume - np.float32(offset)
    out = ndimage.gaussian_filter(
        volume, sigma1, output=np.float32, mode="reflect", truncate=TRUNCATE
    )
    out -= ndimage.gaussian_filter(
        volume, sigma2, output=np.float32, mode="reflect", truncate=TRUNCATE
    )
    return out


def dog_filter(volume, sigma1, sigma2, method="auto", workers=1, offset=0.0):
    """G(sigma1) - G(sigma2) of `volume - offset` as float32; sigmas in voxels.

    Borders follow gaussian_filter's 'reflect' mode (half-sample symmetric) in both
    methods. `offset` (e.g. the mean) is removed inside the filter, on the padded copy,
    which keeps float32 precision without another full-size array.
    """
    if method not in METHODS:
        raise InputError("method must be one of %s, not %r" % (", ".join(METHODS), method))
    volume = np.asarray(volume, dtype=np.float32)
    if method == "auto":
        method = "fft" if sigma2 >= FFT_MIN_SIGMA else "spatial"
    if method == "fft":
        return _dog_fft(volume, float(sigma1), float(sigma2), int(workers or 1), float(offset))
    return _dog_spatial(volume, float(sigma1), float(sigma2), float(offset))


def _load_mask(mask, shape):
    if isinstance(mask, (str, os.PathLike)):
        data, _ = read_mrc(mask)
        name = os.fspath(mask)
    else:
        data, name = np.asarray(mask), "the mask"
    if tuple(data.shape) != tuple(shape):
        raise InputError(
            "mask shape %s (Z Y X) differs from the tomogram's %s"
            % ("x".join(map(str, data.shape)), "x".join(map(str, shape)))
        )
    data = np.asarray(data)
    if data.dtype != bool:
        data = np.asarray(data, dtype=np.float32)
        check_finite(data, name)
        data = data > 0.5
    return data


def _refine(dog, zyx):
    """Sub-voxel peak positions: vertex of the three-point parabola along each axis."""
    zyx = np.asarray(zyx, dtype=np.int64)
    refined = zyx.astype(np.float64)
    if len(zyx) == 0:
        return refined
    centre = dog[tuple(zyx.T)].astype(np.float64)
    for axis in range(3):
        inside = (zyx[:, axis] > 0) & (zyx[:, axis] < dog.shape[axis] - 1)
        lo, hi = zyx.copy(), zyx.copy()
        lo[inside, axis] -= 1
        hi[inside, axis] += 1
        f_lo = dog[tuple(lo.T)].astype(np.float64)
        f_hi = dog[tuple(hi.T)].astype(np.float64)
        curvature = f_lo - 2.0 * centre + f_hi
        ok = inside & (curvature < 0)
        offset = np.zeros(len(zyx))
        offset[ok] = 0.5 * (f_lo[ok] - f_hi[ok]) / curvature[ok]
        refined[:, axis] += np.clip(offset, -0.5, 0.5)
    return refined


def suppress(xyz, scores, min_distance, top=None):
    """Greedy non-maximum suppression; returns indices of kept points, best first.

    Points are visited in decreasing score (ties: input order); a point is kept unless
    a kept point lies within `min_distance` (inclusive). Stops after `top` kept points.
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    limit = len(order) if top is None else min(int(top), len(order))
    if min_distance <= 0 or len(order) == 0:
        return order[:limit]
    points = xyz[order]
    tree = cKDTree(points)
    removed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in range(len(order)):
        if removed[i]:
            continue
        kept.append(i)
        if len(kept) >= limit:
            break
        removed[tree.query_ball_point(points[i], min_distance)] = True
    return order[np.asarray(kept, dtype=np.int64)]


def _check_options(volume, voxel_size, diameter, top, threshold, min_distance, polarity, margin):
    if volume.ndim != 3:
        raise InputError("the tomogram must be a 3-D volume, not shape %s" % (volume.shape,))
    if not (voxel_size is not None and math.isfinite(voxel_size) and voxel_size > 0):
        raise InputError(
            "the voxel size must be > 0 A, not %s (set it with --voxel-size "
            "if the MRC header has none)" % voxel_size
        )
    if not (diameter is not None and math.isfinite(diameter) and diameter > 0):
        raise InputError("the particle diameter must be > 0 A, not %s" % diameter)
    check_diameter(diameter, voxel_size)
    if top is not None and (int(top) != top or top < 1):
        raise InputError("top must be a positive integer, not %s" % top)
    if threshold is not None and not math.isfinite(threshold):
        raise InputError("the threshold must be a finite number, not %s" % threshold)
    for name, value in (("min_distance", min_distance), ("margin", margin)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise InputError("%s must be >= 0 A, not %s" % (name, value))
    if polarity not in POLARITIES + (AUTO_POLARITY,):
        raise InputError("polarity must be 'bright', 'dark' or 'auto', not %r" % (polarity,))


def measured_polarity(dog, fallback="dark"):
    """(polarity, skewness, source) of a DoG response (unsigned, any scale): 'bright'
    when its skewness is >= POLARITY_MIN_SKEW, 'dark' when <= -POLARITY_MIN_SKEW,
    otherwise `fallback` (source 'fallback' instead of 'data')."""
    step = max(1, int(math.ceil(dog.size / POLARITY_SAMPLES)))
    values = dog.ravel()[::step].astype(np.float64)
    values -= values.mean()
    spread = values.std()
    skewness = float(np.mean(values**3) / spread**3) if spread > 0 else 0.0
    if abs(skewness) < POLARITY_MIN_SKEW:
        return fallback, skewness, "fallback"
    return ("bright" if skewness > 0 else "dark"), skewness, "data"


def dog_pick(
    volume,
    voxel_size,
    diameter,
    top=None,
    threshold=None,
    min_distance=None,
    polarity="bright",
    mask=None,
    margin=None,
    method="auto",
    workers=1,
    return_info=False,
    fallback_polarity="dark",
):
    """DoG picks of `volume` ([z, y, x]); returns (xyz [N, 3] voxels, scores [N]).

    voxel_size, diameter, min_distance and margin are in Angstrom; min_distance defaults
    to NMS_FRACTION * diameter and margin to MARGIN_FRACTION * diameter. top / threshold select the
    output (see the module doc; top defaults to DEFAULT_TOP when neither is given, and
    both may be combined). mask: array or MRC path of the volume's shape, picks only
    where mask > 0.5. method: 'auto', 'fft' or 'spatial' filtering; workers: FFT threads.
    polarity 'auto' measures the contrast inside the margin (measured_polarity), taking
    `fallback_polarity` when it is unclear.
    With return_info, a third value gives the parameters in voxels, the contrast used
    (polarity, polarity_skewness, polarity_source: given, data or fallback) and the
    timings.
    Raises InputError for bad input; no peak at all gives empty arrays.
    """
    started = time.perf_counter()
    volume = np.asarray(volume)
    _check_options(volume, voxel_size, diameter, top, threshold, min_distance, polarity, margin)
    voxel_size, diameter = float(voxel_size), float(diameter)
    if top is None and threshold is None:
        top = DEFAULT_TOP
    sigma1, sigma2 = dog_sigmas(diameter, voxel_size)
    min_distance_vox = (
        NMS_FRACTION * diameter if min_distance is None else float(min_distance)
    ) / voxel_size
    margin_vox = (MARGIN_FRACTION * diameter if margin is None else float(margin)) / voxel_size
    keep_mask = None if mask is None else _load_mask(mask, volume.shape)

    data = np.asarray(volume, dtype=np.float32)
    check_finite(data, "the tomogram")
    info = {
        "sigma1_voxels": sigma1,
        "sigma2_voxels": sigma2,
        "min_distance_voxels": min_distance_vox,
        "margin_voxels": margin_vox,
        "polarity": polarity,
        "n_candidates": 0,
    }
    std = float(data.std(dtype=np.float64))
    lo = np.full(3, int(math.ceil(margin_vox - 1e-9)))
    hi = np.array(data.shape) - 1 - lo
    if std == 0:
        raise InputError("the tomogram is constant: there is nothing to pick")
    if np.any(hi < lo):
        raise InputError(
            "the %.0f A margin leaves nothing of a %s-voxel tomogram to pick in "
            "(a particle of %g A is %.0f voxels across): check the diameter, "
            "margin and voxel size"
            % (
                margin_vox * voxel_size,
                "x".join(map(str, data.shape)),
                diameter,
                diameter / voxel_size,
            )
        )
    # The filter is linear: DoG of the standardised, polarity-corrected volume is
    # sign / std times the DoG of (volume - mean); no standardised copy is made.
    t0 = time.perf_counter()
    dog = dog_filter(
        data,
        sigma1,
        sigma2,
        method=method,
        workers=workers,
        offset=float(data.mean(dtype=np.float64)),
    )
    del data
    info["polarity_source"] = "given"
    if polarity == AUTO_POLARITY:
        inside = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        polarity, skewness, source = measured_polarity(dog[inside], fallback_polarity)
        info.update(polarity=polarity, polarity_skewness=skewness, polarity_source=source)
    dog *= np.float32((-1.0 if polarity == "dark" else 1.0) / std)
    info["filter_seconds"] = time.perf_counter() - t0

    # Local maxima inside the margin box (+1 voxel of context for the 3x3x3 test).
    box = tuple(slice(max(a - 1, 0), min(b + 2, n)) for a, b, n in zip(lo, hi, dog.shape))
    sub = dog[box]
    offset = np.array([s.start for s in box])
    peak = sub == ndimage.maximum_filter(sub, size=3, mode="nearest")
    peak &= sub > PEAK_FLOOR * max(float(dog.max()), 0.0)  # also: only positive DoG
    zyx = np.argwhere(peak) + offset
    inside = np.all((zyx >= lo) & (zyx <= hi), axis=1)
    zyx = zyx[inside]
    if keep_mask is not None and len(zyx):
        zyx = zyx[keep_mask[tuple(zyx.T)]]
    scores = dog[tuple(zyx.T)].astype(np.float64) if len(zyx) else np.zeros(0)
    if threshold is not None:
        zyx, scores = zyx[scores >= threshold], scores[scores >= threshold]
    info["n_candidates"] = int(len(zyx))

    refined = np.clip(_refine(dog, zyx), lo, hi) if len(zyx) else np.zeros((0, 3))
    xyz = refined[:, ::-1]
    kept = suppress(xyz, scores, min_distance_vox, top=top)
    info["seconds"] = time.perf_counter() - started
    result = (np.ascontiguousarray(xyz[kept]), scores[kept])
    return result + ((info,) if return_info else ())


def pick_file(
    tomogram,
    outdir,
    diameter,
    top=None,
    threshold=None,
    min_distance=None,
    polarity="bright",
    mask=None,
    margin=None,
    voxel_size=None,
    tomo_name=None,
    formats=PICK_FORMATS,
    tomo_index=1,
    workers=1,
    overwrite=False,
    fallback_polarity="dark",
):
    """Pick one MRC tomogram and write the requested tables into `outdir`.

    Files: <name>_picks.tsv (io.write_coordinates: x y z score, voxels), <name>_picks.star
    (export.write_relion_star) and <name>.tbl (export.write_dynamo_tbl), with <name> =
    tomo_name or the tomogram's file stem, and always <name>_picks.json, the returned
    summary (with the contrast used and how it was decided). Every check is made before
    anything is written; existing files are replaced only with `overwrite`. Returns a
    JSON-able summary.
    """
    from dual_engine import export
    from dual_engine.io import write_coordinates

    started = time.perf_counter()
    unknown = sorted(set(formats) - set(PICK_FORMATS))
    if unknown or not formats:
        raise InputError(
            "formats must be among %s (got %s)"
            % (", ".join(PICK_FORMATS), ", ".join(unknown or ["none"]))
        )
    if voxel_size is not None and not (math.isfinite(voxel_size) and voxel_size > 0):
        raise InputError("the voxel size must be > 0 A, not %s" % voxel_size)
    if int(tomo_index) != tomo_index or tomo_index < 1:
        raise InputError("tomo_index must be a positive integer, not %s" % tomo_index)
    data, header_voxel = read_mrc(tomogram)
    voxel = float(voxel_size) if voxel_size is not None else header_voxel
    if not voxel > 0:
        raise InputError("%s has no voxel size in its header: give --voxel-size" % tomogram)
    name = check_tomo_name(tomo_name or os.path.splitext(os.path.basename(os.fspath(tomogram)))[0])
    suffixes = {"tsv": PICKS_SUFFIX, "star": STAR_SUFFIX, "tbl": DYNAMO_SUFFIX}
    files = {f: os.path.join(outdir, name + suffixes[f]) for f in formats}
    summary_file = os.path.join(outdir, name + PICK_SUMMARY_SUFFIX)
    check_outputs([(tomogram, path) for path in [*files.values(), summary_file]], overwrite)
    xyz, scores, info = dog_pick(
        data,
        voxel,
        diameter,
        top=top,
        threshold=threshold,
        min_distance=min_distance,
        polarity=polarity,
        mask=mask,
        margin=margin,
        workers=workers,
        return_info=True,
        fallback_polarity=fallback_polarity,
    )
    if polarity == AUTO_POLARITY:
        print("%s: %s" % (name, polarity_text(info)), file=sys.stderr)
    if "tsv" in files:
        write_coordinates(files["tsv"], xyz, scores)
    if "star" in files:
        export.write_relion_star(files["star"], xyz, scores, name, voxel, shape=data.shape)
    if "tbl" in files:
        export.write_dynamo_tbl(files["tbl"], xyz, scores, tomo_index=tomo_index)
    if top is not None and len(scores) < top:
        print(
            "%s: %d picks, fewer than the %d asked for (no more peaks at least %.0f A apart "
            "and %.0f A from the faces)"
            % (
                name,
                len(scores),
                top,
                info["min_distance_voxels"] * voxel,
                info["margin_voxels"] * voxel,
            ),
            file=sys.stderr,
        )
    summary = {
        "tomogram": os.fspath(tomogram),
        "tomo_name": name,
        "shape": list(data.shape),
        "voxel_size": voxel,
        "diameter": float(diameter),
        "polarity": info["polarity"],
        "polarity_source": info["polarity_source"],
        "polarity_skewness": info.get("polarity_skewness"),
        "count": int(len(scores)),
        "sigma1_voxels": round(info["sigma1_voxels"], 4),
        "sigma2_voxels": round(info["sigma2_voxels"], 4),
        "min_distance_voxels": round(info["min_distance_voxels"], 4),
        "margin_voxels": round(info["margin_voxels"], 4),
        "n_candidates": info["n_candidates"],
        "score_max": float(scores[0]) if len(scores) else None,
        "score_min": float(scores[-1]) if len(scores) else None,
        "seconds": round(time.perf_counter() - started, 3),
        "files": dict(files, summary=summary_file),
    }
    with open(summary_file, "w") as f:
        json.dump(summary, f, indent=1)
    return summary
