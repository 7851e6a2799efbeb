import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from dual_engine import metrics
from dual_engine.io import (
    InputError,
    Particle,
    read_mrc,
    write_coordinates,
    write_mrc,
    write_particle_locations,
)
from dual_engine.metrics import (
    evaluate_picks,
    evaluate_volumes,
    labels_at,
    match_picks,
    occupancy_hits,
    pearson,
    psnr,
    ssim,
)

ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smooth_volume(shape=(16, 18, 20), seed=0):
    """Blobby test signal: low-passed noise."""
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 2.0)


def slow_ssim(reference, volume, window):
    """SSIM by the explicit formula, window by window (standardised inputs)."""
    x = (reference - reference.mean()) / reference.std()
    y = (volume - volume.mean()) / volume.std()
    r = x.max() - x.min()
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    h = window // 2
    values = []
    for k in range(h, x.shape[0] - h):
        for j in range(h, x.shape[1] - h):
            for i in range(h, x.shape[2] - h):
                cube = (slice(k - h, k + h + 1), slice(j - h, j + h + 1), slice(i - h, i + h + 1))
                bx, by = x[cube].ravel(), y[cube].ravel()
                mx, my = bx.mean(), by.mean()
                cov = np.cov(bx, by)  # sample (n-1) (co)variances
                values.append(
                    (2 * mx * my + c1)
                    * (2 * cov[0, 1] + c2)
                    / ((mx**2 + my**2 + c1) * (cov[0, 0] + cov[1, 1] + c2))
                )
    return float(np.mean(values))


# ----------------------------------------------------------------- volume metrics


def test_identical_volumes_score_perfectly():
    v = smooth_volume()
    assert ssim(v, v) == pytest.approx(1.0, abs=1e-9)
    assert psnr(v, v) == math.inf
    assert pearson(v, v) == pytest.approx(1.0, abs=1e-6)


def test_more_noise_scores_lower():
    rng = np.random.default_rng(1)
    v = smooth_volume()
    noise = rng.normal(size=v.shape) * v.std()
    scores = [
        (psnr(v, v + s * noise), ssim(v, v + s * noise), pearson(v, v + s * noise))
        for s in (0.05, 0.2, 0.5, 1.0, 3.0)
    ]
    for column in zip(*scores):
        assert all(a > b for a, b in zip(column, column[1:])), column


def test_scaled_and_shifted_copy_scores_like_the_copy():
    rng = np.random.default_rng(2)
    v = smooth_volume()
    noisy = v + 0.3 * v.std() * rng.normal(size=v.shape)
    moved = 7.5 * noisy - 120.0
    assert psnr(v, moved) == pytest.approx(psnr(v, noisy), abs=1e-4)
    assert ssim(v, moved) == pytest.approx(ssim(v, noisy), abs=1e-5)
    assert pearson(v, moved) == pytest.approx(pearson(v, noisy), abs=1e-5)
    # and the reference's own scale does not matter either
    assert psnr(4 * v - 2, noisy) == pytest.approx(psnr(v, noisy), abs=1e-4)


def test_psnr_uses_range_of_standardised_reference():
    rng = np.random.default_rng(3)
    v = smooth_volume()
    w = v + 0.5 * v.std() * rng.normal(size=v.shape)
    x = (v - v.mean()) / v.std()
    y = (w - w.mean()) / w.std()
    expected = 10 * np.log10((x.max() - x.min()) ** 2 / np.mean((x - y) ** 2))
    assert psnr(v, w) == pytest.approx(expected, abs=1e-4)


def test_ssim_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 24, 24, 24))
    assert abs(ssim(a, b)) < 0.03
    assert abs(pearson(a, b)) < 0.03


@pytest.mark.parametrize("window", [3, 5])
def test_ssim_matches_slow_reference(window, monkeypatch):
    rng = np.random.default_rng(5)
    a = smooth_volume((9, 10, 11))
    b = a + 0.5 * a.std() * rng.normal(size=a.shape)
    expected = slow_ssim(a, b, window)
    assert ssim(a, b, window) == pytest.approx(expected, abs=1e-6)
    # tiny slabs: the volume is processed in many z pieces, same answer
    monkeypatch.setattr(metrics, "SLAB_VOXELS", 10)
    assert ssim(a, b, window) == pytest.approx(expected, abs=1e-6)


def test_pearson_matches_numpy():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(5, 6, 7))
    b = a + rng.normal(size=a.shape)
    assert pearson(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], abs=1e-6)


def test_bad_volume_inputs_are_refused():
    v = smooth_volume((8, 8, 8))
    with pytest.raises(InputError, match="differ in shape"):
        psnr(v, v[:, :, :7])
    with pytest.raises(InputError, match="differ in shape"):
        ssim(v, v[:7])
    with pytest.raises(InputError, match="differ in shape"):
        pearson(v, v[:, :7])
    with pytest.raises(InputError, match="odd"):
        ssim(v, v, window=4)
    with pytest.raises(InputError, match="constant"):
        ssim(v, np.zeros_like(v))


# ----------------------------------------------------------------- distance matching


def test_match_picks_duplicate_far_and_near():
    truth = [[10, 10, 10], [30, 30, 30], [50, 50, 50]]
    picks = [
        [11, 10, 10],  # 1 voxel from particle 0
        [10, 12, 10],  # duplicate of particle 0 (2 voxels)
        [80, 80, 80],  # far from everything
        [30, 31.5, 30],
    ]  # 1.5 voxels from particle 1
    s = match_picks(picks, truth, 3.0)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 1)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(2 / 3)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s["mean_distance_voxels"] == pytest.approx((1.0 + 1.5) / 2)
    # a radius just below the nearest distances matches nothing
    assert match_picks(picks, truth, 0.9)["tp"] == 0


def test_match_picks_is_optimal_not_greedy():
    # Nearest-first greedy would pair pick 0 with particle 1 (1.4 < 1.6) and leave
    # pick 1 without a partner; the one-to-one optimum matches both.
    truth = [[0, 0, 0], [3, 0, 0]]
    picks = [[1.6, 0, 0], [5, 0, 0]]
    s = match_picks(picks, truth, 2.0)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 0, 0)
    assert s["mean_distance_voxels"] == pytest.approx((1.6 + 2.0) / 2)


def test_match_picks_empty_inputs():
    truth = [[1, 2, 3], [4, 5, 6]]
    s = match_picks(np.zeros((0, 3)), truth, 5)
    assert (s["tp"], s["fp"], s["fn"]) == (0, 0, 2)
    assert (s["precision"], s["recall"], s["f1"]) == (0.0, 0.0, 0.0)
    assert s["mean_distance_voxels"] is None
    s = match_picks(truth, [], 5)
    assert (s["tp"], s["fp"], s["fn"], s["recall"]) == (0, 2, 0, 0.0)
    with pytest.raises(InputError):
        match_picks(truth, truth, 0)


# ----------------------------------------------------------------- occupancy criterion


def label_volume():
    """20^3 labels: particle 1 a cube, particle 2 (to exclude) a cube, particle 3 never hit."""
    occ = np.zeros((20, 20, 20), dtype=np.int16)
    occ[2:5, 2:5, 2:5] = 1  # z, y, x in 2..4
    occ[10:13, 10:13, 10:13] = 2
    occ[15:18, 2:5, 15:18] = 3
    return occ


def test_occupancy_hits_hand_built():
    occ = label_volume()
    truth_xyz = [[3, 3, 3], [11, 11, 11], [16, 3, 16]]
    picks = [
        [3, 3, 3],  # particle 1
        [4.4, 2.6, 3.2],  # particle 1 again: a duplicate (rounds to 4, 3, 3)
        [11, 11, 11],  # particle 2: excluded
        [8, 8, 8],  # background
        [5, 3, 3],  # one voxel beyond particle 1 along x: a hit only after dilation
        [-6, 3, 3],
    ]  # outside: clipped to x = 0, background
    s = occupancy_hits(picks, occ, n_truth=2, excluded_labels=[2], truth_xyz=truth_xyz)
    assert (s["tp"], s["fp"], s["fn"]) == (1, 5, 1)
    assert s["precision"] == pytest.approx(1 / 6)
    assert s["recall"] == pytest.approx(1 / 2)
    assert (s["n_background"], s["n_on_excluded"], s["n_duplicates"], s["n_clipped"]) == (
        2,
        1,
        2,
        1,
    )
    assert s["mean_distance_voxels"] == pytest.approx(0.0)  # first hit is the first pick

    plain = occupancy_hits(picks, occ, n_truth=2, excluded_labels=[2], dilate=False)
    assert (plain["tp"], plain["n_background"], plain["n_duplicates"]) == (1, 3, 1)

    # without exclusion particle 2 is a true positive
    s = occupancy_hits(picks, occ, n_truth=3)
    assert (s["tp"], s["fn"], s["n_on_excluded"]) == (2, 1, 0)
    # a diagonal neighbour is not reached by the (cross) dilation
    assert occupancy_hits([[5, 5, 3]], occ, n_truth=2)["tp"] == 0
    assert occupancy_hits([[5, 3, 3]], occ, n_truth=2)["tp"] == 1


def test_occupancy_hits_refuses_a_mask_that_does_not_fit_the_list():
    occ = label_volume()
    with pytest.raises(InputError, match="do not belong together"):
        occupancy_hits([[3, 3, 3], [11, 11, 11]], occ, n_truth=1)
    with pytest.raises(InputError, match="no line"):
        occupancy_hits([[16, 3, 16]], occ, n_truth=3, truth_xyz=[[3, 3, 3], [11, 11, 11]])


def test_labels_at_equals_full_grey_dilation():
    rng = np.random.default_rng(7)
    occ = rng.integers(0, 6, size=(7, 8, 9)) * (rng.random((7, 8, 9)) < 0.3)
    dilated = ndimage.grey_dilation(occ, footprint=ndimage.generate_binary_structure(3, 1))
    zyx = np.stack(np.meshgrid(*[np.arange(n) for n in occ.shape], indexing="ij"), -1).reshape(
        -1, 3
    )
    assert np.array_equal(labels_at(occ, zyx, dilate=True), dilated.ravel())
    assert np.array_equal(labels_at(occ, zyx, dilate=False), occ.ravel())


# ----------------------------------------------------------------- file level and CLI


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ENGINE_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "dual_engine"] + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def write_picks_case(tmp_path):
    occ = label_volume()
    write_mrc(tmp_path / "occupancy_mask.mrc", occ, 10.0)
    write_particle_locations(
        tmp_path / "particle_locations.txt",
        [Particle("1BXN", 3, 3, 3), Particle("vesicle", 11, 11, 11), Particle("4CR2", 16, 3, 16)],
    )
    picks = [[3, 3, 3], [3.4, 3, 3], [11, 11, 11], [16, 4, 17], [8, 8, 8]]
    write_coordinates(tmp_path / "picks.txt", picks, [5, 4, 3, 2, 1])
    return (
        tmp_path / "picks.txt",
        tmp_path / "particle_locations.txt",
        tmp_path / "occupancy_mask.mrc",
    )


def test_evaluate_picks_files(tmp_path):
    picks, truth, occ = write_picks_case(tmp_path)
    r = evaluate_picks(picks, truth, voxel_size=10.0, distance=20.0, occupancy=occ)
    assert (r["n_picks"], r["n_truth"], r["n_truth_excluded"]) == (5, 2, 1)
    d = r["distance"]
    assert d["max_distance_voxels"] == pytest.approx(2.0)
    assert (d["tp"], d["fp"], d["fn"]) == (2, 3, 0)
    assert d["mean_distance_angstrom"] == pytest.approx(10 * (0 + math.sqrt(2)) / 2)
    o = r["occupancy"]
    assert (o["tp"], o["fp"], o["fn"], o["n_on_excluded"]) == (2, 3, 0, 1)
    # only one criterion asked: only that block
    r = evaluate_picks(picks, truth, voxel_size=10.0, distance=20.0)
    assert "distance" in r and "occupancy" not in r
    # names compare case-insensitively; an empty exclusion keeps the vesicle
    assert evaluate_picks(picks, truth, 10.0, occupancy=occ, exclude=["VESICLE"])["n_truth"] == 2
    r = evaluate_picks(picks, truth, 10.0, occupancy=occ, exclude=[])
    assert (r["n_truth"], r["occupancy"]["tp"]) == (3, 3)


def test_evaluate_picks_needs_a_criterion(tmp_path):
    picks, truth, _ = write_picks_case(tmp_path)
    with pytest.raises(InputError, match="no scoring criterion"):
        evaluate_picks(picks, truth, voxel_size=10.0)
    with pytest.raises(InputError, match="not found"):
        evaluate_picks(tmp_path / "missing.txt", truth, voxel_size=10.0, distance=5)


def test_evaluate_volumes_files(tmp_path):
    rng = np.random.default_rng(8)
    v = smooth_volume((12, 14, 16)).astype(np.float32)
    write_mrc(tmp_path / "ref.mrc", v, 10.0)
    write_mrc(tmp_path / "low.mrc", v + 0.2 * v.std() * rng.normal(size=v.shape), 10.05)
    write_mrc(tmp_path / "high.mrc", v + 2.0 * v.std() * rng.normal(size=v.shape), 10.0)
    rows = evaluate_volumes(
        tmp_path / "ref.mrc", [tmp_path / "low.mrc", tmp_path / "high.mrc"], ssim_window=5
    )
    assert [os.path.basename(r["volume"]) for r in rows] == ["low.mrc", "high.mrc"]
    assert rows[0]["psnr"] > rows[1]["psnr"] and rows[0]["ssim"] > rows[1]["ssim"]
    low, _ = read_mrc(tmp_path / "low.mrc")
    assert rows[0]["ssim"] == pytest.approx(ssim(v, low, 5), abs=1e-9)
    write_mrc(tmp_path / "coarse.mrc", v, 12.0)
    with pytest.raises(InputError, match="voxel size"):
        evaluate_volumes(tmp_path / "ref.mrc", [tmp_path / "coarse.mrc"])
    write_mrc(tmp_path / "small.mrc", v[:, :, :15], 10.0)
    with pytest.raises(InputError, match="differ in shape"):
        evaluate_volumes(tmp_path / "ref.mrc", [tmp_path / "low.mrc", tmp_path / "small.mrc"])


def test_cli_evaluate_volumes(tmp_path):
    rng = np.random.default_rng(9)
    v = smooth_volume((12, 14, 16)).astype(np.float32)
    write_mrc(tmp_path / "ref.mrc", v, 10.0)
    write_mrc(tmp_path / "noisy.mrc", v + v.std() * rng.normal(size=v.shape), 10.0)
    done = run_cli(
        "evaluate", "volumes", tmp_path / "ref.mrc", tmp_path / "ref.mrc", tmp_path / "noisy.mrc"
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert rows[0]["psnr"] == math.inf and rows[0]["ssim"] == pytest.approx(1.0)
    assert 0 < rows[1]["ssim"] < 1 and rows[1]["pearson"] < 1

    write_mrc(tmp_path / "small.mrc", v[1:], 10.0)
    done = run_cli("evaluate", "volumes", tmp_path / "ref.mrc", tmp_path / "small.mrc")
    assert done.returncode == 2
    assert "differ in shape" in done.stderr and "Traceback" not in done.stderr


def test_cli_evaluate_picks(tmp_path):
    picks, truth, occ = write_picks_case(tmp_path)
    done = run_cli(
        "evaluate", "picks", picks, truth, "--voxel-size", 10, "--distance", 20, "--occupancy", occ
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["distance"]["tp"] == 2 and result["occupancy"]["tp"] == 2
    assert result["occupancy"]["precision"] == pytest.approx(2 / 5)

    done = run_cli("evaluate", "picks", picks, truth, "--voxel-size", 10)
    assert done.returncode == 2
    assert "no scoring criterion" in done.stderr and "Traceback" not in done.stderr
