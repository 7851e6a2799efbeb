"""DoG picking and the RELION / Dynamo exports, on small synthetic volumes (seconds)."""

import json
import os
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
from scipy.spatial.distance import pdist

from dual_engine import cli
from dual_engine.export import (
    read_dynamo_tbl,
    read_relion_star,
    read_star_loops,
    write_dynamo_tbl,
    write_relion_star,
)
from dual_engine.io import InputError, read_coordinates, read_particle_locations, write_mrc
from dual_engine.metrics import match_picks
from dual_engine.pick import (
    DEFAULT_TOP,
    NMS_FRACTION,
    POLARITY_MIN_SKEW,
    dog_filter,
    dog_pick,
    dog_sigmas,
    suppress,
)
from dual_engine.synth.phantom import make_phantom

ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOXEL = 10.0
SHAPE = (40, 72, 72)
DIAMETER = 100.0  # A: radius 5 voxels, sigma1 2.89 voxels
BLOB_SIGMA = 2.5  # voxels
# (x, y, z) voxels and amplitudes, best first; > 9 voxels apart and >= 8 from the faces.
BLOBS = np.array(
    [[20, 20, 12], [50, 22, 20], [30, 52, 27], [58, 56, 14], [16, 40, 20], [40, 36, 12]],
    dtype=float,
)
AMPLITUDES = np.array([1.0, 0.9, 0.8, 0.7, 0.6, 0.5])


def blob_volume(centres=BLOBS, amplitudes=AMPLITUDES, shape=SHAPE, sigma=BLOB_SIGMA):
    z, y, x = np.indices(shape, dtype=np.float32)
    volume = np.zeros(shape, dtype=np.float32)
    for (cx, cy, cz), a in zip(centres, amplitudes):
        volume += a * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2))
    return volume


def noise_volume(shape=(40, 96, 96), seed=0, smooth=2.0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), smooth)


def run_cli(*args):
    env = dict(
        os.environ,
        PYTHONPATH=ENGINE_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
    )
    return subprocess.run(
        [sys.executable, "-m", "dual_engine"] + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


# --------------------------------------------------------------------------- filter


def test_sigma_rule_matches_paper():
    sigma1, sigma2 = dog_sigmas(280.0, 10.0)  # ~28 nm ribosome at 1 nm voxels
    assert sigma1 == pytest.approx(140.0 / np.sqrt(3.0) / 10.0)
    assert sigma1 == pytest.approx(8.0, rel=0.02)  # the paper's 8.0 nm
    assert sigma2 == pytest.approx(1.1 * sigma1)


def test_sigma_rule_is_the_best_scale_for_a_ball():
    n, radius = 48, 7.0
    z, y, x = np.indices((n, n, n))
    r = np.sqrt((x - 24) ** 2 + (y - 24) ** 2 + (z - 24) ** 2)
    ball = (0.5 * (1 - np.tanh((r - radius) / 0.5))).astype(np.float32)
    sigmas = np.linspace(0.6, 1.4, 17) * radius / np.sqrt(3.0)
    response = [dog_filter(ball, s, 1.1 * s)[24, 24, 24] for s in sigmas]
    best = sigmas[int(np.argmax(response))]
    assert best == pytest.approx(radius / np.sqrt(3.0), rel=0.1)


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_fft_and_real_space_filters_agree(sigma):
    volume = noise_volume((24, 40, 48), smooth=1.0) + 5.0
    spatial = dog_filter(volume, sigma, 1.1 * sigma, method="spatial")
    fourier = dog_filter(volume, sigma, 1.1 * sigma, method="fft")
    assert spatial.dtype == fourier.dtype == np.float32
    assert spatial.shape == fourier.shape == volume.shape
    assert np.abs(spatial - fourier).max() < 1e-2 * np.abs(spatial).max()


# --------------------------------------------------------------------------- picking


def test_blobs_found_exactly_and_ordered():
    xyz, scores = dog_pick(blob_volume(), VOXEL, DIAMETER)
    assert xyz.shape == (len(BLOBS), 3) and scores.shape == (len(BLOBS),)
    assert np.all(np.diff(scores) < 0)  # best first, strictly
    assert np.abs(xyz - BLOBS).max() <= 1.0  # the brief's +-1 voxel
    assert np.abs(xyz - BLOBS).max() < 0.05  # in fact sub-voxel exact
    assert xyz.dtype == np.float64 and np.all(scores > 0)


def test_subvoxel_refinement():
    centres = BLOBS[:3] + np.array([[0.3, -0.4, 0.2], [-0.25, 0.35, -0.3], [0.45, 0.1, -0.45]])
    xyz, _ = dog_pick(blob_volume(centres, AMPLITUDES[:3]), VOXEL, DIAMETER)
    assert np.abs(xyz - centres).max() < 0.2


def test_scores_do_not_depend_on_grey_scale():
    volume = blob_volume()
    _, scores = dog_pick(volume, VOXEL, DIAMETER)
    _, scaled = dog_pick(3.0 * volume - 7.0, VOXEL, DIAMETER)
    np.testing.assert_allclose(scaled, scores, rtol=1e-3)


def test_top_and_threshold():
    volume = blob_volume()
    xyz, scores = dog_pick(volume, VOXEL, DIAMETER, top=3)
    np.testing.assert_allclose(xyz, BLOBS[:3], atol=0.05)
    _, all_scores = dog_pick(volume, VOXEL, DIAMETER)
    xyz, scores = dog_pick(volume, VOXEL, DIAMETER, threshold=all_scores[3])
    assert len(scores) == 4 and np.all(scores >= all_scores[3])
    xyz, scores = dog_pick(volume, VOXEL, DIAMETER, threshold=all_scores[3], top=2)
    assert len(scores) == 2
    xyz, scores = dog_pick(volume, VOXEL, DIAMETER, threshold=2 * all_scores[0])
    assert xyz.shape == (0, 3) and scores.shape == (0,)


def test_default_top_is_500():
    _, scores = dog_pick(noise_volume((48, 160, 160), smooth=0.8), VOXEL, 30.0)
    assert len(scores) == DEFAULT_TOP


def test_nothing_to_pick_is_said_not_returned_empty():
    for volume in (np.zeros(SHAPE, np.float32), np.full(SHAPE, 3.0, np.float32)):
        with pytest.raises(InputError, match="constant"):
            dog_pick(volume, VOXEL, DIAMETER)
    # margins that leave no room at all
    with pytest.raises(InputError, match="leaves nothing"):
        dog_pick(blob_volume(), VOXEL, DIAMETER, margin=300.0)
    # A threshold above every peak is a valid empty result.
    xyz, scores = dog_pick(blob_volume(), VOXEL, DIAMETER, threshold=1e9)
    assert xyz.shape == (0, 3) and scores.shape == (0,)


def test_an_extreme_voxel_is_refused():
    volume = blob_volume()
    volume[3, 4, 5] = 3e38
    with pytest.raises(InputError, match="extreme values"):
        dog_pick(volume, VOXEL, DIAMETER)


def test_non_maximum_suppression():
    volume = noise_volume()
    for min_distance in (60.0, 120.0):
        xyz, scores = dog_pick(volume, VOXEL, DIAMETER, min_distance=min_distance, top=10000)
        assert len(xyz) > 10
        assert pdist(xyz).min() >= min_distance / VOXEL
        assert np.all(np.diff(scores) <= 0)
    close, _ = dog_pick(volume, VOXEL, DIAMETER, min_distance=0.0, top=10000)
    assert len(close) > len(xyz) and pdist(close).min() < 120.0 / VOXEL
    # default: NMS_FRACTION of the diameter
    xyz, _ = dog_pick(volume, VOXEL, DIAMETER, top=10000)
    assert pdist(xyz).min() >= NMS_FRACTION * DIAMETER / VOXEL


def test_suppress_is_greedy_in_score_order():
    xyz = np.array([[0, 0, 0], [3, 0, 0], [6, 0, 0], [20, 0, 0]], dtype=float)
    scores = np.array([1.0, 3.0, 2.0, 0.5])
    assert list(suppress(xyz, scores, 4.0)) == [1, 3]  # 1 removes 0 and 2
    assert list(suppress(xyz, scores, 3.0)) == [1, 3]  # inclusive distance
    assert list(suppress(xyz, scores, 2.9)) == [1, 2, 0, 3]
    assert list(suppress(xyz, scores, 4.0, top=1)) == [1]


def test_margin_respected():
    volume = noise_volume()
    for margin in (0.0, 55.0, 100.0):
        xyz, _ = dog_pick(volume, VOXEL, DIAMETER, margin=margin, top=10000)
        assert len(xyz) > 0
        m = margin / VOXEL
        upper = np.array(volume.shape[::-1]) - 1 - np.ceil(m)
        assert np.all(xyz >= np.ceil(m)) and np.all(xyz <= upper)
    # default margin: MARGIN_FRACTION of the diameter (2.5 voxels here)
    xyz, _ = dog_pick(volume, VOXEL, DIAMETER, top=10000)
    assert np.all(xyz >= 3) and np.all(xyz <= np.array(volume.shape[::-1]) - 4)
    assert np.any(xyz < 5)  # nearer the faces than the radius


def test_mask_respected_and_applied_before_suppression(tmp_path):
    # Two blobs 12 voxels apart, suppression radius 20 voxels: the stronger one is
    # masked out, so the weaker one must survive.
    centres = np.array([[28.0, 36.0, 20.0], [40.0, 36.0, 20.0]])
    volume = blob_volume(centres, [1.0, 0.6])
    mask = np.zeros(SHAPE, dtype=np.float32)
    mask[:, :, 34:] = 1.0
    xyz, _ = dog_pick(volume, VOXEL, DIAMETER, mask=mask, min_distance=200.0)
    assert len(xyz) == 1 and np.all(xyz[:, 0] >= 33.5)
    assert np.abs(xyz[0] - centres[1]).max() < 0.5
    unmasked, _ = dog_pick(volume, VOXEL, DIAMETER, min_distance=200.0)
    assert len(unmasked) == 1 and np.abs(unmasked[0] - centres[0]).max() < 0.5
    both, _ = dog_pick(volume, VOXEL, DIAMETER)
    assert len(both) == 2
    # same through an MRC file and a boolean array, on a noise volume
    noise = noise_volume()
    half = np.zeros(noise.shape, dtype=np.int8)
    half[:, :, :48] = 1
    write_mrc(tmp_path / "mask.mrc", half, VOXEL)
    from_file, _ = dog_pick(noise, VOXEL, DIAMETER, mask=str(tmp_path / "mask.mrc"), top=10000)
    from_bool, _ = dog_pick(noise, VOXEL, DIAMETER, mask=half.astype(bool), top=10000)
    assert len(from_file) > 5 and np.all(from_file[:, 0] <= 47.5)
    np.testing.assert_array_equal(from_file, from_bool)


def test_mask_shape_mismatch_is_a_clear_error():
    with pytest.raises(InputError, match="mask shape 40x72x71 .* differs .* 40x72x72"):
        dog_pick(blob_volume(), VOXEL, DIAMETER, mask=np.ones((40, 72, 71)))


def test_polarity():
    dark = -blob_volume()
    xyz, scores = dog_pick(dark, VOXEL, DIAMETER, polarity="dark")
    np.testing.assert_allclose(xyz, BLOBS, atol=0.05)
    bright, _ = dog_pick(dark, VOXEL, DIAMETER, polarity="bright")
    if len(bright):
        distances = np.linalg.norm(bright[:, None, :] - BLOBS[None], axis=2)
        assert distances.min() > 3.0  # nothing at the (dark) particle centres


@pytest.mark.parametrize("sign, expected", [(1, "bright"), (-1, "dark")])
def test_auto_polarity_is_measured_on_the_tomogram(sign, expected):
    noisy = sign * blob_volume() + np.random.default_rng(0).normal(0, 0.3, SHAPE)
    xyz, _, info = dog_pick(
        noisy, VOXEL, DIAMETER, top=len(BLOBS), polarity="auto", return_info=True
    )
    assert (info["polarity"], info["polarity_source"]) == (expected, "data")
    assert sign * info["polarity_skewness"] >= POLARITY_MIN_SKEW
    distances = np.linalg.norm(xyz[:, None, :] - BLOBS[None], axis=2)
    assert distances.min(axis=0).max() < 1.5  # every particle found


def test_auto_polarity_falls_back_when_unclear():
    noise = np.random.default_rng(1).normal(0, 1, SHAPE)
    _, _, info = dog_pick(
        noise, VOXEL, DIAMETER, polarity="auto", fallback_polarity="bright", return_info=True
    )
    assert (info["polarity"], info["polarity_source"]) == ("bright", "fallback")
    assert abs(info["polarity_skewness"]) < POLARITY_MIN_SKEW


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(diameter=0.0), "diameter must be > 0"),
        (dict(diameter=-5.0), "diameter must be > 0"),
        (dict(diameter=15.0), "at least 2 voxels"),
        (dict(voxel_size=0.0), "voxel size must be > 0"),
        (dict(top=0), "top must be a positive integer"),
        (dict(threshold=float("nan")), "threshold must be a finite"),
        (dict(min_distance=-1.0), "min_distance must be >= 0"),
        (dict(margin=-1.0), "margin must be >= 0"),
        (dict(polarity="white"), "polarity must be"),
    ],
)
def test_bad_options(kwargs, message):
    options = dict(voxel_size=VOXEL, diameter=DIAMETER)
    options.update(kwargs)
    with pytest.raises(InputError, match=message):
        dog_pick(blob_volume(), **options)


def test_nan_volume_refused():
    volume = blob_volume()
    volume[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        dog_pick(volume, VOXEL, DIAMETER)


# --------------------------------------------------------------------------- phantom


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("pick_phantom"))
    make_phantom(
        folder,
        shape=(48, 128, 128),
        voxel_size=VOXEL,
        seed=3,
        classes=["ribosome"],
        write_noise_free=True,
    )
    particles = read_particle_locations(os.path.join(folder, "particle_locations.txt"))
    truth = np.array([p.xyz for p in particles if p.name == "ribosome"])
    return folder, truth


@pytest.mark.parametrize("name", ["grandmodel", "reconstruction_noisefree"])
def test_picks_on_phantom_hit_ribosomes(phantom, name):
    folder, truth = phantom
    volume = mrcfile.read(os.path.join(folder, name + ".mrc"))
    # The 48-voxel slab is thin: a 5-voxel margin instead of the 14-voxel radius.
    xyz, scores = dog_pick(volume, VOXEL, 280.0, top=len(truth), margin=50.0)
    assert len(xyz) >= 0.6 * len(truth)
    # the paper's criterion: within 8 nm of a true centre, one-to-one
    result = match_picks(xyz, truth, 8.0)
    assert result["precision"] >= 0.7, result
    assert result["recall"] >= 0.55, result
    assert result["mean_distance_voxels"] < 4.0, result
    # a broken picker (random positions) fails the same thresholds by far
    rng = np.random.default_rng(0)
    random_xyz = rng.uniform([5, 5, 5], np.array(volume.shape[::-1]) - 6, size=xyz.shape)
    assert match_picks(random_xyz, truth, 8.0)["precision"] < 0.3


# --------------------------------------------------------------------------- exports


def _some_picks():
    xyz, scores = dog_pick(blob_volume(), VOXEL, DIAMETER)
    return xyz, scores


def test_relion_star_round_trip(tmp_path):
    xyz, scores = _some_picks()
    path = tmp_path / "picks.star"
    write_relion_star(path, xyz, scores, "TS_01", VOXEL, shape=SHAPE)
    blocks = read_star_loops(path)
    assert list(blocks) == ["particles"]
    assert blocks["particles"]["labels"] == [
        "rlnTomoName",
        "rlnCoordinateX",
        "rlnCoordinateY",
        "rlnCoordinateZ",
        "rlnCenteredCoordinateXAngst",
        "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst",
        "rlnAutopickFigureOfMerit",
    ]
    back, back_scores, names = read_relion_star(path)
    assert np.abs(back - xyz).max() < 0.01
    np.testing.assert_allclose(back_scores, scores, rtol=1e-6)
    assert names == ["TS_01"] * len(xyz)
    # RELION 5 centred coordinates: (x - n/2) * voxel size
    row = blocks["particles"]["rows"][0]
    assert float(row[4]) == pytest.approx((xyz[0, 0] - SHAPE[2] / 2) * VOXEL, abs=1e-3)
    assert float(row[6]) == pytest.approx((xyz[0, 2] - SHAPE[0] / 2) * VOXEL, abs=1e-3)
    # and a file with only centred coordinates reads back too
    with open(tmp_path / "centred.star", "w") as f:
        f.write(
            "data_particles\nloop_\n_rlnTomoName\n_rlnCenteredCoordinateXAngst\n"
            "_rlnCenteredCoordinateYAngst\n_rlnCenteredCoordinateZAngst\n"
        )
        for r in blocks["particles"]["rows"]:
            f.write(" ".join([r[0]] + r[4:7]) + "\n")
    centred, _, _ = read_relion_star(tmp_path / "centred.star", voxel_size=VOXEL, shape=SHAPE)
    assert np.abs(centred - xyz).max() < 0.01
    with pytest.raises(InputError, match="centred coordinates"):
        read_relion_star(tmp_path / "centred.star")


def test_relion_star_other_pixel_size(tmp_path):
    xyz, scores = _some_picks()
    path = tmp_path / "unbinned.star"
    # e.g. a bin-4 tomogram at 10 A of a 2.5 A tilt series, for a RELION 4 import
    write_relion_star(path, xyz, scores, "TS_01", VOXEL, coordinate_pixel_size=2.5)
    raw, _, _ = read_relion_star(path)
    assert np.abs(raw - 4 * xyz).max() < 0.01
    back, _, _ = read_relion_star(path, voxel_size=VOXEL, coordinate_pixel_size=2.5)
    assert np.abs(back - xyz).max() < 0.01
    assert "pixels of 2.5 A" in open(path).read()


def test_dynamo_tbl_round_trip(tmp_path):
    xyz, scores = _some_picks()
    path = tmp_path / "picks.tbl"
    write_dynamo_tbl(path, xyz, scores, tomo_index=3)
    table = np.loadtxt(path, ndmin=2)
    assert table.shape == (len(xyz), 35)
    np.testing.assert_array_equal(table[:, 0], np.arange(1, len(xyz) + 1))  # tags
    np.testing.assert_array_equal(table[:, 1:3], 1)  # aligned, averaged
    np.testing.assert_array_equal(table[:, 3:9], 0)  # shifts, angles
    np.testing.assert_allclose(table[:, 9], scores, rtol=1e-6)  # cc
    np.testing.assert_array_equal(table[:, 19], 3)  # tomogram
    assert np.abs(table[:, 23:26] - (xyz + 1)).max() < 0.01  # 1-based x y z
    back, back_scores, tomos = read_dynamo_tbl(path)
    assert np.abs(back - xyz).max() < 0.01
    np.testing.assert_allclose(back_scores, scores, rtol=1e-6)
    np.testing.assert_array_equal(tomos, 3)
    # 0-based variant (Scipion's dynamo plugin) and the missing-wedge columns
    write_dynamo_tbl(path, xyz, scores, one_based=False, tilt_range=(-60, 60))
    table = np.loadtxt(path, ndmin=2)
    assert np.abs(table[:, 23:26] - xyz).max() < 0.01
    np.testing.assert_array_equal(table[:, 12:15], [[1, -60, 60]] * len(xyz))
    back, _, _ = read_dynamo_tbl(path, one_based=False)
    assert np.abs(back - xyz).max() < 0.01


def test_exports_of_no_picks(tmp_path):
    none = np.zeros((0, 3))
    write_relion_star(tmp_path / "e.star", none, [], "t", VOXEL, shape=SHAPE)
    write_dynamo_tbl(tmp_path / "e.tbl", none, [])
    xyz, scores, names = read_relion_star(tmp_path / "e.star")
    assert xyz.shape == (0, 3) and scores.shape == (0,) and names == []
    xyz, scores, tomos = read_dynamo_tbl(tmp_path / "e.tbl")
    assert xyz.shape == (0, 3) and len(scores) == len(tomos) == 0


def test_export_checks(tmp_path):
    xyz, scores = _some_picks()
    with pytest.raises(InputError, match="tomogram name"):
        write_relion_star(tmp_path / "x.star", xyz, scores, "two words", VOXEL)
    with pytest.raises(InputError, match="coordinates but"):
        write_relion_star(tmp_path / "x.star", xyz, scores[:-1], "t", VOXEL)
    with pytest.raises(InputError, match="positive integer"):
        write_dynamo_tbl(tmp_path / "x.tbl", xyz, scores, tomo_index=0)
    assert not os.listdir(tmp_path)


# --------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def tomogram(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pick_cli")
    path = folder / "tomo.mrc"
    write_mrc(path, blob_volume(), VOXEL)
    return path


def test_cli_writes_three_tables_and_its_summary(tomogram, tmp_path):
    out = tmp_path / "picks"
    result = run_cli(
        "pick", tomogram, out, "--diameter", DIAMETER, "--top", 4, "--tomo-name", "TS_07"
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["count"] == 4 and summary["tomo_name"] == "TS_07"
    assert summary["sigma1_voxels"] == pytest.approx(5 / np.sqrt(3), abs=1e-3)
    assert summary["sigma2_voxels"] == pytest.approx(1.1 * 5 / np.sqrt(3), abs=1e-3)
    assert summary["seconds"] >= 0
    files = summary["files"]
    assert files == {
        "tsv": str(out / "TS_07_picks.tsv"),
        "star": str(out / "TS_07_picks.star"),
        "tbl": str(out / "TS_07.tbl"),
        "summary": str(out / "TS_07_picks.json"),
    }
    with open(files["summary"]) as f:
        assert json.load(f) == summary
    # Bright blobs: auto (the default) measured it.
    assert (summary["polarity"], summary["polarity_source"]) == ("bright", "data")
    assert "bright contrast (auto: skewness +" in result.stderr
    xyz, scores = read_coordinates(files["tsv"])
    np.testing.assert_allclose(xyz, BLOBS[:4], atol=0.05)
    star_xyz, star_scores, names = read_relion_star(files["star"])
    tbl_xyz, tbl_scores, _ = read_dynamo_tbl(files["tbl"])
    assert np.abs(star_xyz - xyz).max() < 0.01 and np.abs(tbl_xyz - xyz).max() < 0.01
    np.testing.assert_allclose(star_scores, scores, rtol=1e-5)
    np.testing.assert_allclose(tbl_scores, scores, rtol=1e-5)
    assert names == ["TS_07"] * 4


def test_cli_formats_and_job_file(tomogram, tmp_path, capsys):
    job = tmp_path / "job.json"
    # Positionals in the job file too: expand_job puts job options before the command
    # line's words, where the nargs='+' --formats would swallow positionals.
    job.write_text(
        json.dumps(
            {
                "tomogram": str(tomogram),
                "outdir": str(tmp_path / "o"),
                "diameter": DIAMETER,
                "threshold": 0.0,
                "formats": ["star"],
                "polarity": "bright",
                "tomo_name": "ignored",
            }
        )
    )
    assert cli.main(["pick", "--job", str(job), "--tomo-name", "T1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["count"] == len(BLOBS) and summary["tomo_name"] == "T1"
    assert sorted(os.listdir(tmp_path / "o")) == ["T1_picks.json", "T1_picks.star"]


def test_cli_bad_diameter_exits_2(tomogram, tmp_path):
    result = run_cli("pick", tomogram, tmp_path / "o", "--diameter", 0)
    assert result.returncode == 2
    assert "dual-engine: error: diameter must be > 0" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--diameter", "-10"], "diameter must be > 0"),
        (["--diameter", "100", "--voxel-size", "0"], "voxel_size must be > 0"),
        (["--diameter", "100", "--tomo-name", "a b"], "tomogram name"),
    ],
)
def test_cli_bad_values_exit_2(tomogram, tmp_path, capsys, extra, message):
    assert cli.main(["pick", str(tomogram), str(tmp_path / "o")] + extra) == 2
    assert message in capsys.readouterr().err


def test_cli_top_and_threshold_are_exclusive(tomogram, tmp_path, capsys):
    assert (
        cli.main(
            [
                "pick",
                str(tomogram),
                str(tmp_path / "o"),
                "--diameter",
                "100",
                "--top",
                "5",
                "--threshold",
                "0.1",
            ]
        )
        == 2
    )
    assert "give only one of top, threshold" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_mask_shape_mismatch_exits_2(tomogram, tmp_path, capsys):
    write_mrc(tmp_path / "small.mrc", np.ones((40, 72, 70), np.int8), VOXEL)
    code = cli.main(
        [
            "pick",
            str(tomogram),
            str(tmp_path / "o"),
            "--diameter",
            "100",
            "--mask",
            str(tmp_path / "small.mrc"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "mask shape 40x72x70 (Z Y X) differs from the tomogram's 40x72x72" in err
    assert not (tmp_path / "o").exists()
