"""The phantom simulator, checked on its real output (small volumes, generated once)."""

import json
import os
import subprocess
import sys

import mrcfile
import numpy as np
import pytest

from dual_engine import cli
from dual_engine.contract import PHANTOM_CONTEXT_CLASSES, PHANTOM_PARTICLE_BOX
from dual_engine.io import InputError, read_mrc, read_particle_locations
from dual_engine.metrics import pearson
from dual_engine.synth.acquisition import AcquisitionParams, acquire
from dual_engine.synth.packing import CLASS_IDS, MACROMOLECULES, euler_zxz_matrix, rotate_box
from dual_engine.synth.phantom import make_phantom

ENGINE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (48, 128, 128)
VOXEL = 10.0
MRC_NAMES = (
    "reconstruction",
    "reconstruction_noisefree",
    "grandmodel",
    "class_mask",
    "occupancy_mask",
)


def _load(folder):
    return {name: mrcfile.read(os.path.join(folder, name + ".mrc")) for name in MRC_NAMES}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("phantom"))
    summary = make_phantom(folder, shape=SHAPE, voxel_size=VOXEL, seed=7, write_noise_free=True)
    return folder, summary, _load(folder)


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ENGINE_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "dual_engine"] + [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def wedge_ratio(volume, max_tilt, margin=8.0):
    """Mean |F| at kx-kz angles beyond the tilt range over that inside it.

    The angle is measured from the kx axis in the kx-kz plane; the lowest frequencies,
    the ky axis and the band near the wedge edge are left out.
    """
    amplitude = np.abs(np.fft.fftn(volume - volume.mean()))
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n) for n in volume.shape), indexing="ij")
    k_xz = np.hypot(kx, kz)
    angle = np.degrees(np.arctan2(np.abs(kz), np.abs(kx)))
    band = (k_xz > 0.08) & (k_xz < 0.45)
    inside = band & (angle < max_tilt - margin)
    beyond = band & (angle > max_tilt + margin)
    return amplitude[beyond].mean() / amplitude[inside].mean()


def shell_correlation(a, b, k_lo, k_hi):
    """Fourier correlation of two volumes in the shell k_lo <= |k| < k_hi (cycles/voxel)."""
    fa, fb = np.fft.fftn(a - a.mean()), np.fft.fftn(b - b.mean())
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n) for n in a.shape), indexing="ij")
    k = np.sqrt(kx**2 + ky**2 + kz**2)
    shell = (k >= k_lo) & (k < k_hi)
    cross = np.real(fa[shell] * np.conj(fb[shell])).sum()
    return cross / np.sqrt((np.abs(fa[shell]) ** 2).sum() * (np.abs(fb[shell]) ** 2).sum())


def test_every_output_written_with_voxel_size(phantom):
    folder, summary, volumes = phantom
    for name in MRC_NAMES:
        path = os.path.join(folder, name + ".mrc")
        with mrcfile.open(path, header_only=True) as mrc:
            assert float(mrc.voxel_size.x) == pytest.approx(VOXEL)
            assert float(mrc.voxel_size.z) == pytest.approx(VOXEL)
        assert volumes[name].shape == SHAPE
    assert volumes["grandmodel"].dtype == np.float32
    assert volumes["reconstruction"].dtype == np.float32
    assert volumes["class_mask"].dtype == np.int16
    assert volumes["occupancy_mask"].dtype == np.int16
    angles = np.loadtxt(os.path.join(folder, "tilt_angles.txt"))
    np.testing.assert_allclose(angles, np.arange(-60, 61, 3))
    record = json.load(open(os.path.join(folder, "phantom.json")))
    assert record["parameters"]["seed"] == 7
    assert record["engine_version"]
    assert record["seconds"] > 0
    assert record["counts"] == summary["counts"]
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]


def test_grand_model_contents(phantom):
    folder, summary, volumes = phantom
    counts = summary["counts"]
    for name in MACROMOLECULES:
        assert counts.get(name, 0) >= 5, counts
    assert counts["vesicle"] >= 1 and counts["fiducial"] >= 2
    density = volumes["grandmodel"]
    gold = density[volumes["class_mask"] == CLASS_IDS["fiducial"]]
    protein = density[np.isin(volumes["class_mask"], [CLASS_IDS[n] for n in MACROMOLECULES])]
    assert np.median(gold) > 4 * np.median(protein)
    # Weak background inside the slab, nothing outside it.
    slab_first, slab_last = json.load(open(os.path.join(folder, "phantom.json")))["slab_z"]
    assert np.all(density[:slab_first] == 0) and np.all(density[slab_last + 1 :] == 0)
    empty = volumes["occupancy_mask"][slab_first : slab_last + 1] == 0
    background = density[slab_first : slab_last + 1][empty]
    assert 0.02 < np.median(background) < 0.3
    # Classes differ in size: the ribosome-like class is the largest.
    sizes = {
        n: np.mean(
            [
                np.sum(volumes["occupancy_mask"] == i + 1)
                for i, p in enumerate(
                    read_particle_locations(os.path.join(folder, "particle_locations.txt"))
                )
                if p.name == n
            ]
        )
        for n in ("ribosome", "dimer")
    }
    assert sizes["ribosome"] > 10 * sizes["dimer"]


def test_every_particle_inside_its_own_label(phantom):
    folder, _, volumes = phantom
    particles = read_particle_locations(os.path.join(folder, "particle_locations.txt"))
    occupancy, classes = volumes["occupancy_mask"], volumes["class_mask"]
    assert len(particles) == occupancy.max()
    assert set(np.unique(occupancy)) == set(range(len(particles) + 1))
    table = dict(line.split() for line in open(os.path.join(folder, "class_conversion_table.txt")))
    for label, p in enumerate(particles, 1):
        x, y, z = (int(round(c)) for c in (p.x, p.y, p.z))
        assert occupancy[z, y, x] == label, (label, p)
        # The class mask marks the particle (vesicles: only the membrane) with its class id.
        assert np.all(np.isin(classes[occupancy == label], [0, int(table[p.name])]))
        assert np.any(classes[occupancy == label] == int(table[p.name]))


def test_macromolecules_fit_the_phantom_box(phantom):
    """contract.PHANTOM_PARTICLE_BOX (the box of the plugin's phantom coordinates) holds
    every macromolecule's label, centred on its listed position."""
    folder, _, volumes = phantom
    particles = read_particle_locations(os.path.join(folder, "particle_locations.txt"))
    half = PHANTOM_PARTICLE_BOX / VOXEL / 2
    occupancy = volumes["occupancy_mask"]
    checked = 0
    for label, p in enumerate(particles, 1):
        if p.name in PHANTOM_CONTEXT_CLASSES:
            continue
        z, y, x = np.nonzero(occupancy == label)
        if len(x) == 0:
            continue
        extent = np.abs(np.stack([x - p.x, y - p.y, z - p.z])).max()
        assert extent <= half, (p, extent, half)
        checked += 1
    assert checked > 0


def test_rotation_convention():
    box = np.zeros((9, 9, 9), dtype=np.float32)
    box[4, 4, 7] = 1.0  # a point on +x ([z, y, x] indexing)
    turned = rotate_box(box, euler_zxz_matrix(90, 0, 0))
    assert tuple(np.argwhere(turned > 0.5)[0]) == (4, 7, 4)  # Rz(90): +x -> +y
    turned = rotate_box(box, euler_zxz_matrix(0, 90, 90))
    assert tuple(np.argwhere(turned > 0.5)[0]) == (7, 4, 4)  # Rz(90) first: +x -> +y -> +z


def test_missing_wedge(phantom):
    _, _, volumes = phantom
    assert wedge_ratio(volumes["reconstruction"], 60) < 0.3
    assert wedge_ratio(volumes["reconstruction_noisefree"], 60) < 0.3
    assert wedge_ratio(volumes["grandmodel"], 60) > 0.6  # the measure sees no wedge there


def test_low_snr_positive_correlation(phantom):
    folder, summary, volumes = phantom
    noisy = pearson(volumes["reconstruction"], volumes["grandmodel"])
    clean = pearson(volumes["reconstruction_noisefree"], volumes["grandmodel"])
    assert 0.02 < noisy < 0.5
    assert clean > noisy + 0.2
    assert summary["pearson"] == pytest.approx(noisy, abs=1e-3)
    assert 0 < summary["snr"] < 1


def test_ctf_flips_contrast_beyond_first_zero(phantom):
    _, _, volumes = phantom
    # At 6 um underfocus (300 kV) the CTF's first zero is at 0.29 cycles/voxel of 10 A and
    # its second at 0.41: dense stays bright at low frequency, turns dark in between.
    params = AcquisitionParams(defocus_um=6.0, defocus_jitter_um=0.0, radial_cutoff=0.45)
    result = acquire(volumes["grandmodel"], VOXEL, params, np.random.default_rng(0))
    clean = result.reconstruction_noisefree
    assert shell_correlation(clean, volumes["grandmodel"], 0.05, 0.2) > 0.3
    assert shell_correlation(clean, volumes["grandmodel"], 0.31, 0.39) < -0.3


def test_same_seed_reproduces_other_seed_differs(phantom, tmp_path):
    folder, _, volumes = phantom
    make_phantom(tmp_path / "same", shape=SHAPE, voxel_size=VOXEL, seed=7, write_noise_free=True)
    again = _load(tmp_path / "same")
    for name in MRC_NAMES:
        assert again[name].tobytes() == volumes[name].tobytes(), name
    assert (
        open(tmp_path / "same" / "particle_locations.txt").read()
        == open(os.path.join(folder, "particle_locations.txt")).read()
    )
    make_phantom(tmp_path / "other", shape=SHAPE, voxel_size=VOXEL, seed=8)
    other = {
        name: mrcfile.read(tmp_path / "other" / (name + ".mrc"))
        for name in ("grandmodel", "reconstruction")
    }
    assert not np.array_equal(other["grandmodel"], volumes["grandmodel"])
    assert not np.array_equal(other["reconstruction"], volumes["reconstruction"])


def test_even_odd_halves_split_the_noise_and_leave_the_rest_as_it_is(phantom, tmp_path):
    """Halves of half the dose: their mean is the tomogram, their difference noise alone;
    the phantom's other volumes are byte for byte those made without halves."""
    _, _, volumes = phantom
    folder = tmp_path / "halves"
    summary = make_phantom(
        folder, shape=SHAPE, voxel_size=VOXEL, seed=7, write_noise_free=True, write_halves=True
    )
    again = _load(folder)
    for name in MRC_NAMES:
        assert again[name].tobytes() == volumes[name].tobytes(), name
    halves = []
    for name in ("even", "odd"):
        path = summary["files"]["reconstruction_%s.mrc" % name]
        data, voxel_size = read_mrc(path)
        assert data.shape == SHAPE and voxel_size == pytest.approx(VOXEL)
        halves.append(np.array(data, dtype=np.float64))
    even, odd = halves
    full, clean = volumes["reconstruction"], volumes["reconstruction_noisefree"]
    assert pearson((even + odd) / 2, full) > 0.99
    assert abs(pearson(even - odd, clean)) < 0.05
    # each half sees the structure, with more noise than the full tomogram
    assert 0.4 * pearson(full, clean) < pearson(even, clean) < 0.95 * pearson(full, clean)
    record = json.load(open(folder / "phantom.json"))
    assert record["parameters"]["write_halves"] is True


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "cli"
    result = run_cli(
        "phantom",
        out,
        "--shape",
        32,
        96,
        96,
        "--voxel-size",
        16,
        "--seed",
        3,
        "--particles",
        12,
        "--tilt-step",
        5,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sum(summary["counts"][n] for n in MACROMOLECULES if n in summary["counts"]) >= 10
    data, voxel = read_mrc(out / "reconstruction.mrc")
    assert data.shape == (32, 96, 96) and voxel == pytest.approx(16.0)
    assert len(np.loadtxt(out / "tilt_angles.txt")) == 25
    assert not (out / "reconstruction_noisefree.mrc").exists()


def test_cli_job_file(tmp_path):
    out = tmp_path / "job"
    job = {
        "outdir": str(out),
        "shape": [32, 96, 96],
        "voxel_size": 12.0,
        "seed": 1,
        "classes": ["dimer", "tetramer"],
        "particles": 8,
        "noise_free": True,
        "tilt_range": [-45, 45],
    }
    (tmp_path / "job.json").write_text(json.dumps(job))
    result = run_cli("phantom", "--job", tmp_path / "job.json")
    assert result.returncode == 0, result.stderr
    names = {p.name for p in read_particle_locations(out / "particle_locations.txt")}
    assert names <= {"dimer", "tetramer", "vesicle", "fiducial"}
    assert {"dimer", "tetramer"} <= names
    assert (out / "reconstruction_noisefree.mrc").exists()
    record = json.load(open(out / "phantom.json"))
    assert record["parameters"]["voxel_size"] == 12.0
    assert record["tilt_angles"][0] == -45 and record["tilt_angles"][-1] == 45


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(classes=["ribosome", "spaceship"]), "valid classes: ribosome"),
        (dict(shape=(20, 64, 64), classes=None), "too small for class 'ribosome'"),
        (dict(shape=(8, 64, 64)), "too small"),
        (dict(tilt_range=(-95, 60)), "inside (-90, 90)"),
        (dict(tilt_range=(30, 10)), "minimum must be below"),
        (dict(tilt_step=0), "tilt step must be > 0"),
        (dict(dose=-5), "dose must be > 0"),
        (dict(defocus_um=-1), "defocus_um must be >= 0"),
        (dict(voxel_size=0), "voxel size must be > 0"),
        (dict(n_particles=-3), "n_particles must be >= 0"),
    ],
)
def test_bad_inputs(tmp_path, kwargs, message):
    options = dict(shape=(32, 64, 64), voxel_size=VOXEL, classes=["dimer"])
    options.update(kwargs)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_phantom(tmp_path / "bad", **options)
    assert not (tmp_path / "bad").exists() or not os.listdir(tmp_path / "bad")


def test_cli_reports_bad_class(tmp_path, capsys):
    code = cli.main(
        ["phantom", str(tmp_path / "x"), "--shape", "32", "64", "64", "--classes", "dimer", "blob"]
    )
    assert code == 2
    assert "'blob'" in capsys.readouterr().err
