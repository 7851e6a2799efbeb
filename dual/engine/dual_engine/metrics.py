"""Scores: denoised volumes against a ground truth (PSNR, SSIM, Pearson) and picked
coordinates against a particle list (one-to-one distance matching, SHREC 2021
occupancy-mask hits).

Volume conventions (DUAL paper, Methods eq. 10-11 and Results):
- both volumes are standardised (io.standardize: zero mean, unit std) before scoring;
- the "peak" of PSNR and the SSIM constants use R = max - min of the standardised
  reference (the paper's 2^B - 1 has no meaning for float maps);
- SSIM is the mean of the local 3-D SSIM map over every window^3 cube that lies fully
  inside the volume (no padded border windows), with sample (n-1) variances.

Pick conventions (coordinates in voxels, (x, y, z), arrays indexed [z, y, x]):
- precision = TP / number of picks, recall = TP / number of truth particles; with no
  picks precision is 0, with no truth particles recall is 0, and F1 is 0 when both are 0;
- every pick that does not produce a new true positive is a false positive
  (fp = n_picks - tp), so duplicates lower the precision.
"""

import os

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from dual_engine.io import (
    InputError,
    read_coordinates,
    read_mrc,
    read_particle_locations,
    standardize,
)

DEFAULT_EXCLUDE = ("vesicle", "fiducial")
VOXEL_SIZE_TOLERANCE = 0.01  # relative
SLAB_VOXELS = 1 << 22  # voxels per float64 work array in the slab loops (32 MB)


# --------------------------------------------------------------------------- volumes


def _check_same_shape(a, b, names=("reference", "volume")):
    if tuple(np.shape(a)) != tuple(np.shape(b)):
        raise InputError(
            "%s and %s differ in shape: %s vs %s"
            % (names[0], names[1], tuple(np.shape(a)), tuple(np.shape(b)))
        )


def standardized_pair(reference, volume):
    """Both volumes standardised (float32), after checking that their shapes match."""
    _check_same_shape(reference, volume)
    return standardize(reference, "reference"), standardize(volume, "volume")


def data_range(standardized_reference):
    """R = max - min of the (standardised) reference: the PSNR peak and SSIM scale."""
    return float(np.max(standardized_reference)) - float(np.min(standardized_reference))


def _slabs(shape, halo=0):
    """Yield (start, stop) along z so that one slab plus 2*halo planes holds about
    SLAB_VOXELS voxels (at least 2*halo+1 planes)."""
    plane = int(np.prod(shape[1:]))
    step = max(2 * halo + 1, SLAB_VOXELS // max(plane, 1) - 2 * halo)
    for start in range(0, shape[0], step):
        yield start, min(start + step, shape[0])


def _mean_squared_difference(a, b):
    total = 0.0
    for z0, z1 in _slabs(a.shape):
        diff = (a[z0:z1].astype(np.float64) - b[z0:z1]).ravel()
        total += float(np.dot(diff, diff))
    return total / a.size


def _mean_product(a, b):
    total = 0.0
    for z0, z1 in _slabs(a.shape):
        total += float(
            np.dot(a[z0:z1].astype(np.float64).ravel(), b[z0:z1].astype(np.float64).ravel())
        )
    return total / a.size


def _psnr_standardized(reference, volume, value_range):
    mse = _mean_squared_difference(reference, volume)
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(value_range**2 / mse))


def _ssim_standardized(reference, volume, window, value_range):
    if window < 3 or window % 2 == 0:
        raise InputError("the SSIM window must be an odd number >= 3, not %s" % window)
    if min(reference.shape) < window:
        raise InputError(
            "volume shape %s is smaller than the SSIM window %d" % (tuple(reference.shape), window)
        )
    c1 = (0.01 * value_range) ** 2
    c2 = (0.03 * value_range) ** 2
    n = window**reference.ndim
    sample = n / (n - 1.0)  # population -> sample (co)variance
    h = window // 2
    inner = (slice(h, -h),) * 3  # centres whose window lies inside the slab

    def local_mean(v):
        return ndimage.uniform_filter(v, size=window)[inner]

    total, count = 0.0, 0
    # Window centres are taken slab by slab along z; slab [s0, s1) of centres
    # (numbered from the first valid centre, plane h) reads input planes
    # [s0, s1 + 2h), so every statistic comes from a full window inside the volume.
    n_centres = reference.shape[0] - 2 * h
    for s0, s1 in _slabs((n_centres,) + reference.shape[1:], halo=h):
        x = reference[s0 : s1 + 2 * h].astype(np.float64)
        y = volume[s0 : s1 + 2 * h].astype(np.float64)
        mx, my = local_mean(x), local_mean(y)
        vx = sample * (local_mean(x * x) - mx * mx)
        vy = sample * (local_mean(y * y) - my * my)
        vxy = sample * (local_mean(x * y) - mx * my)
        del x, y
        ssim_map = (2 * mx * my + c1) * (2 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        total += float(ssim_map.sum())
        count += ssim_map.size
    return total / count


def psnr(reference, volume):
    """PSNR in dB of `volume` against `reference`, both standardised first.

    The paper's eq. 10 uses a peak of 2^B - 1 (integer images) that does not apply to
    float density maps; here PSNR = 10 log10(R^2 / MSE) with R = max - min of the
    standardised reference and MSE the mean squared difference of the standardised
    volumes. Identical volumes give +inf.
    """
    ref, vol = standardized_pair(reference, volume)
    return _psnr_standardized(ref, vol, data_range(ref))


def ssim(reference, volume, window=7):
    """3-D SSIM (paper eq. 11) of `volume` against `reference`, both standardised first.

    Local means, variances and covariance over uniform window^3 cubes, variances and
    covariance with the sample (n - 1) normalisation, c1 = (0.01 R)^2, c2 = (0.03 R)^2
    with R = max - min of the standardised reference. The result is the mean of the
    local SSIM map over all window centres whose cube lies fully inside the volume.
    """
    ref, vol = standardized_pair(reference, volume)
    return _ssim_standardized(ref, vol, int(window), data_range(ref))


def psnr_ssim_on_reference_scale(reference, volume, window=7):
    """PSNR and SSIM where only the reference is standardised and the volume gets the
    same shift and scale: a volume of the right shape but the wrong amplitude (an
    all-zero fill, say) scores low, as it must when the amplitude is what is restored."""
    _check_same_shape(reference, volume)
    reference = np.asarray(reference, dtype=np.float64)
    mean, std = float(reference.mean()), float(reference.std())
    if std == 0:
        raise InputError("the reference is constant: it carries no signal")
    ref = ((reference - mean) / std).astype(np.float32)
    vol = ((np.asarray(volume, dtype=np.float64) - mean) / std).astype(np.float32)
    value_range = data_range(ref)
    return {
        "psnr": _psnr_standardized(ref, vol, value_range),
        "ssim": _ssim_standardized(ref, vol, int(window), value_range),
    }


def pearson(a, b):
    """Pearson correlation coefficient of two same-shape arrays.

    It is 0/0, i.e. undefined, when either array is constant: that raises InputError
    (as psnr and ssim do), rather than returning a number that would look like a score.
    """
    _check_same_shape(a, b, ("first array", "second array"))
    return _mean_product(standardize(a, "first array"), standardize(b, "second array"))


# --------------------------------------------------------------------------- picks


def _as_xyz(points, name):
    points = np.asarray(points, dtype=np.float64)
    if points.size == 0:
        return np.zeros((0, 3))
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(
            "%s must be an N x 3 array of (x, y, z), got shape %s" % (name, points.shape)
        )
    if not np.all(np.isfinite(points)):
        raise InputError("%s contain NaN or infinite coordinates" % name)
    return points


def _rates(tp, n_picks, n_truth):
    precision = tp / n_picks if n_picks else 0.0
    recall = tp / n_truth if n_truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "tp": int(tp),
        "fp": int(n_picks - tp),
        "fn": int(n_truth - tp),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "n_picks": int(n_picks),
        "n_truth": int(n_truth),
    }


def one_to_one_pairs(picks_xyz, truth_xyz, max_distance_voxels):
    """(pick_index, truth_index, distance) arrays of an optimal one-to-one matching.

    Only pairs closer than `max_distance_voxels` may match. Among matchings with the
    largest number of pairs, the one with the smallest total distance is returned.
    Candidate pairs come from a KD-tree; the assignment is solved separately on each
    connected group of picks and particles, so the cost matrices stay small.
    """
    picks = _as_xyz(picks_xyz, "picks")
    truth = _as_xyz(truth_xyz, "truth")
    radius = float(max_distance_voxels)
    empty = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    if len(picks) == 0 or len(truth) == 0:
        return empty
    neighbours = cKDTree(truth).query_ball_point(picks, radius)
    pick_idx = np.repeat(np.arange(len(picks)), [len(n) for n in neighbours])
    truth_idx = np.fromiter((j for n in neighbours for j in n), dtype=int, count=len(pick_idx))
    dist = np.linalg.norm(picks[pick_idx] - truth[truth_idx], axis=1)
    within = dist <= radius
    pick_idx, truth_idx, dist = pick_idx[within], truth_idx[within], dist[within]
    if len(dist) == 0:
        return empty

    n_p = len(picks)
    nodes = n_p + len(truth)
    graph = coo_matrix((np.ones(len(dist)), (pick_idx, n_p + truth_idx)), shape=(nodes, nodes))
    _, component = connected_components(graph, directed=False)
    edge_component = component[pick_idx]
    order = np.argsort(edge_component, kind="stable")
    bounds = np.flatnonzero(np.diff(edge_component[order])) + 1
    out_p, out_t, out_d = [], [], []
    for edges in np.split(order, bounds):
        rows, row_of = np.unique(pick_idx[edges], return_inverse=True)
        cols, col_of = np.unique(truth_idx[edges], return_inverse=True)
        # A forbidden pair costs more than any set of allowed pairs, so the assignment
        # first maximises the number of allowed pairs, then minimises their distance.
        forbidden = radius * (min(len(rows), len(cols)) + 1) + 1.0
        cost = np.full((len(rows), len(cols)), forbidden)
        cost[row_of, col_of] = dist[edges]
        r, c = linear_sum_assignment(cost)
        allowed = cost[r, c] < forbidden
        out_p.append(rows[r[allowed]])
        out_t.append(cols[c[allowed]])
        out_d.append(cost[r, c][allowed])
    return np.concatenate(out_p), np.concatenate(out_t), np.concatenate(out_d)


def match_picks(picks_xyz, truth_xyz, max_distance_voxels):
    """Distance criterion: one-to-one matching of picks to truth centres.

    A pick is a true positive when it is paired with a particle centre no farther than
    `max_distance_voxels` (optimal one-to-one assignment); each particle is matched at
    most once, so duplicate picks of one particle are false positives.
    Returns tp, fp, fn, precision, recall, f1, n_picks, n_truth and
    mean_distance_voxels (mean pick-centre distance of the matched pairs; None if tp=0).
    """
    if not max_distance_voxels > 0:
        raise InputError("the match distance must be positive, not %s" % max_distance_voxels)
    picks = _as_xyz(picks_xyz, "picks")
    truth = _as_xyz(truth_xyz, "truth")
    _, _, dist = one_to_one_pairs(picks, truth, max_distance_voxels)
    scores = _rates(len(dist), len(picks), len(truth))
    scores["mean_distance_voxels"] = float(dist.mean()) if len(dist) else None
    return scores


_CROSS_OFFSETS = np.array(
    [[0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]]
)  # (z, y, x)


def labels_at(occupancy_volume, zyx, dilate=True):
    """Integer labels of `occupancy_volume` at integer [z, y, x] positions (N x 3).

    With `dilate`, the label is that of the volume dilated once (grey dilation, i.e. a
    maximum) with the 3x3x3 cross (6-connected) structuring element, which is what
    SHREC 2021's eval.py gets from skimage.morphology.dilation's default footprint.
    Only the neighbourhoods of the given positions are read, never the whole volume.
    """
    zyx = np.asarray(zyx, dtype=int).reshape(-1, 3)
    upper = np.array(occupancy_volume.shape) - 1
    offsets = _CROSS_OFFSETS if dilate else _CROSS_OFFSETS[:1]
    labels = None
    for offset in offsets:
        z, y, x = np.clip(zyx + offset, 0, upper).T  # a clipped neighbour is the centre
        values = np.rint(np.asarray(occupancy_volume[z, y, x], dtype=np.float64)).astype(np.int64)
        labels = values if labels is None else np.maximum(labels, values)
    return labels


def occupancy_hits(
    picks_xyz, occupancy_volume, n_truth, excluded_labels=(), truth_xyz=None, dilate=True
):
    """SHREC 2021 localisation criterion on an occupancy mask.

    `occupancy_volume` is indexed [z, y, x]; label 0 is background and label k > 0 is
    the particle on line k of particle_locations.txt. Each pick is rounded to the
    nearest voxel, clipped into the volume and takes the label found there (after one
    cross dilation if `dilate`, as SHREC does).

    - TP = number of distinct non-excluded particles hit;
    - precision = TP / number of picks, recall = TP / n_truth, where `n_truth` counts
      the particles left after removing the excluded ones;
    - `excluded_labels` (e.g. vesicles, fiducials) are removed from the ground truth:
      a pick landing on one is never a TP, but it still counts as a pick, so it lowers
      precision exactly like a pick in the background (SHREC's eval.py divides by all
      predictions too); such picks are reported as n_on_excluded.
    fp = n_picks - tp = n_background + n_on_excluded + n_duplicates.
    With `truth_xyz` (the full particle list, label k -> row k-1), mean_distance_voxels
    is the mean distance between each hit particle's centre and the first pick (in the
    given order) that hit it, as in SHREC.
    """
    picks = _as_xyz(picks_xyz, "picks")
    if np.ndim(occupancy_volume) != 3:
        raise InputError("the occupancy mask must be a 3-D volume")
    shape = np.array(occupancy_volume.shape)
    rounded = np.rint(picks[:, ::-1]).astype(np.int64)  # (x, y, z) -> [z, y, x]
    zyx = np.clip(rounded, 0, shape - 1)
    n_clipped = int(np.any(zyx != rounded, axis=1).sum())
    labels = labels_at(occupancy_volume, zyx, dilate) if len(picks) else np.zeros(0, np.int64)

    excluded = np.isin(labels, np.asarray(list(excluded_labels), dtype=np.int64))
    on_particle = (labels > 0) & ~excluded
    hit_labels, first_pick = np.unique(labels[on_particle], return_index=True)
    first_pick = np.flatnonzero(on_particle)[first_pick]
    tp = len(hit_labels)
    if tp > n_truth:
        raise InputError(
            "the occupancy mask has more hit particles (%d) than the truth "
            "list has particles (%d): mask and list do not belong together" % (tp, n_truth)
        )
    scores = _rates(tp, len(picks), n_truth)
    scores.update(
        n_background=int((labels <= 0).sum()),
        n_on_excluded=int(excluded.sum()),
        n_duplicates=int(on_particle.sum()) - tp,
        n_clipped=n_clipped,
        mean_distance_voxels=None,
    )
    if truth_xyz is not None:
        truth = _as_xyz(truth_xyz, "truth")
        if tp and hit_labels.max() > len(truth):
            raise InputError(
                "occupancy label %d has no line in the particle list (%d lines)"
                % (hit_labels.max(), len(truth))
            )
        if tp:
            dist = np.linalg.norm(picks[first_pick] - truth[hit_labels - 1], axis=1)
            scores["mean_distance_voxels"] = float(dist.mean())
    return scores


# --------------------------------------------------------------------------- files


def _same_voxel_size(a, b):
    """True when equal within VOXEL_SIZE_TOLERANCE; an unset (0) header is not compared."""
    if a <= 0 or b <= 0:
        return True
    return abs(a - b) <= VOXEL_SIZE_TOLERANCE * max(a, b)


def evaluate_volumes(reference_path, volume_paths, ssim_window=7):
    """PSNR, SSIM and Pearson of each volume against the reference MRC.

    All volumes must have the reference's shape and voxel size (within 1%; a header
    voxel size of 0, i.e. unset, is not compared). Everything is checked before any
    scoring. Returns [{"volume", "psnr", "ssim", "pearson"}, ...] in input order.
    """
    reference, ref_voxel = read_mrc(reference_path)
    volumes = []
    for path in volume_paths:
        data, voxel = read_mrc(path)
        _check_same_shape(reference, data, ("reference %s" % reference_path, str(path)))
        if not _same_voxel_size(ref_voxel, voxel):
            raise InputError(
                "voxel size of %s (%.4g A) differs from the reference's (%.4g A)"
                % (path, voxel, ref_voxel)
            )
        volumes.append((path, data))
    if ssim_window < 3 or ssim_window % 2 == 0:
        raise InputError("--ssim-window must be an odd number >= 3, not %s" % ssim_window)

    ref = standardize(reference, "reference %s" % reference_path)
    value_range = data_range(ref)
    rows = []
    for path, data in volumes:
        vol = standardize(data, str(path))
        rows.append(
            {
                "volume": os.fspath(path),
                "psnr": _psnr_standardized(ref, vol, value_range),
                "ssim": _ssim_standardized(ref, vol, int(ssim_window), value_range),
                "pearson": _mean_product(ref, vol),
            }
        )
        del vol
    return rows


def _read_table(reader, path, what):
    if not os.path.exists(path):
        raise InputError("%s file not found: %s" % (what, path))
    try:
        return reader(path)
    except InputError:
        raise
    except (OSError, ValueError, IndexError) as err:
        raise InputError("cannot read %s file %s: %s" % (what, path, err)) from err


def evaluate_picks(
    picks_path, truth_path, voxel_size, distance=None, occupancy=None, exclude=DEFAULT_EXCLUDE
):
    """Score picked coordinates against a SHREC particle list.

    picks_path: coordinate table (x y z score) or SHREC list, in voxels;
    truth_path: SHREC particle_locations.txt on the same voxel grid;
    voxel_size: Angstrom per voxel of both; distance: match radius in Angstrom for the
    one-to-one distance criterion; occupancy: occupancy_mask.mrc for the SHREC hit
    criterion. At least one criterion is required. Classes in `exclude` (names compared
    case-insensitively) are removed from the ground truth for both criteria.
    Returns a dict with the counts and a "distance" and/or "occupancy" score block.
    """
    if distance is None and occupancy is None:
        raise InputError(
            "no scoring criterion: give a match distance in Angstrom "
            "(--distance) and/or an occupancy mask (--occupancy)"
        )
    if not voxel_size or voxel_size <= 0:
        raise InputError("the voxel size must be positive, not %s" % voxel_size)
    if distance is not None and not distance > 0:
        raise InputError("the match distance must be positive, not %s" % distance)

    picks_xyz, _ = _read_table(read_coordinates, picks_path, "picks")
    picks_xyz = _as_xyz(picks_xyz, "picks in %s" % picks_path)
    particles = _read_table(read_particle_locations, truth_path, "truth")
    excluded_names = {name.lower() for name in (exclude or ())}
    is_excluded = np.array([p.name.lower() in excluded_names for p in particles], dtype=bool)
    all_truth = np.array([p.xyz for p in particles]).reshape(-1, 3)
    truth = all_truth[~is_excluded]

    result = {
        "picks": os.fspath(picks_path),
        "truth": os.fspath(truth_path),
        "voxel_size": float(voxel_size),
        "excluded_classes": sorted(excluded_names),
        "n_picks": len(picks_xyz),
        "n_truth": len(truth),
        "n_truth_excluded": int(is_excluded.sum()),
    }
    if distance is not None:
        scores = match_picks(picks_xyz, truth, distance / voxel_size)
        scores["max_distance_angstrom"] = float(distance)
        scores["max_distance_voxels"] = float(distance / voxel_size)
        result["distance"] = _with_angstrom(scores, voxel_size)
    if occupancy is not None:
        mask, _ = read_mrc(occupancy)
        scores = occupancy_hits(
            picks_xyz,
            mask,
            len(truth),
            excluded_labels=np.flatnonzero(is_excluded) + 1,
            truth_xyz=all_truth,
        )
        scores["occupancy_mask"] = os.fspath(occupancy)
        result["occupancy"] = _with_angstrom(scores, voxel_size)
    return result


def _with_angstrom(scores, voxel_size):
    d = scores["mean_distance_voxels"]
    scores["mean_distance_angstrom"] = None if d is None else d * float(voxel_size)
    return scores


# --------------------------------------------------------------------------- Fourier regions


def fourier_region_scores(reference, volume, region, same_scale=True):
    """How well `volume` restores `reference` inside a Fourier region (rfftn-grid mask):
    PSNR and SSIM of the two volumes made of that region's coefficients only, and the
    normalised correlation of the region's complex coefficients.

    same_scale: the volumes share units (a tomogram before and after), so PSNR/SSIM
    use the reference's scale for both (psnr_ssim_on_reference_scale: a zero
    fill scores low); False standardises each region-only volume on its own (against a
    density map, say)."""
    a, b = np.fft.rfftn(reference), np.fft.rfftn(volume)
    ref_part = np.fft.irfftn(np.where(region, a, 0), s=reference.shape)
    vol_part = np.fft.irfftn(np.where(region, b, 0), s=reference.shape)
    energy_a, energy_b = (float(np.sum(np.abs(f[region]) ** 2)) for f in (a, b))
    if same_scale:
        scores = psnr_ssim_on_reference_scale(ref_part, vol_part)
    else:
        scores = {'psnr': psnr(ref_part, vol_part), 'ssim': ssim(ref_part, vol_part)}
    # A region left empty (up to float32 round-off, e.g. a zero fill) correlates 0.
    if energy_b <= 1e-8 * energy_a or energy_a == 0:
        scores['fourier_correlation'] = 0.0
    else:
        cross = np.sum(a[region] * np.conj(b[region]))
        scores['fourier_correlation'] = float(np.real(cross) / np.sqrt(energy_a * energy_b))
    return scores
