"""Fast checks of the benchmark code (seconds; none needs the benchmark-only
dependencies bm4d or Topaz, so CI runs them with the project's own setup).

    python -m pytest bench/tests -q
"""

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import baselines  # noqa: E402
import methods  # noqa: E402
import report  # noqa: E402
import study  # noqa: E402


def _noisy_ball(shape=(24, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    clean = (((z - 12) ** 2 + (y - 16) ** 2 + (x - 16) ** 2) < 36).astype(np.float32)
    return clean, (clean + rng.normal(0, 0.5, shape)).astype(np.float32)


def test_gaussian_shape_and_smoothing():
    _, noisy = _noisy_ball()
    out = baselines.gaussian(noisy, 1.5)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert out.std() < noisy.std()


def test_anisotropic_diffusion_conserves_mean_and_denoises():
    clean, noisy = _noisy_ball()
    out = baselines.anisotropic_diffusion(noisy, kappa=1.0, iterations=10)
    # zero-flux borders: the scheme only moves mass around
    assert abs(float(out.mean()) - float(noisy.mean())) < 1e-4
    assert np.mean((out - clean) ** 2) < np.mean((noisy - clean) ** 2)
    const = np.full((8, 8, 8), 3.0, np.float32)
    assert np.allclose(baselines.anisotropic_diffusion(const, 1.0, 5), 3.0)
    with pytest.raises(ValueError):
        baselines.anisotropic_diffusion(noisy, 1.0, 1, step=0.2)


def test_yx_tiling_is_exact_for_a_pointwise_network():
    import torch

    rng = np.random.default_rng(1)
    vol = rng.normal(size=(8, 50, 37)).astype(np.float32)
    out = baselines._yx_tiled(vol, lambda t: 2 * t + 1, core=16, overlap=4)
    assert np.allclose(out, 2 * vol + 1)
    wrapped = baselines._PerTileStandardised(lambda t: t)
    assert torch.allclose(
        wrapped(torch.ones(1, 1, 4, 4, 4) * 2 + torch.arange(4.0)),
        torch.ones(1, 1, 4, 4, 4) * 2 + torch.arange(4.0),
        atol=1e-5,
    )


def test_supervised_trains_and_applies(tmp_path):
    from dual_engine.io import write_mrc

    clean, noisy = _noisy_ball((32, 40, 40))
    write_mrc(tmp_path / "n.mrc", noisy, 10.0)
    write_mrc(tmp_path / "c.mrc", clean, 10.0)
    model = str(tmp_path / "unet.pt")
    summary = baselines.train_supervised(
        [str(tmp_path / "n.mrc")],
        [str(tmp_path / "c.mrc")],
        model,
        minutes=1,
        width=4,
        depth=1,
        size=16,
        batch_size=2,
        max_iterations=3,
        log=None,
    )
    assert summary["iterations"] == 3
    out = baselines.supervised(noisy, model, tile=32, overlap=8)
    assert out.shape == noisy.shape and np.all(np.isfinite(out))


def test_nlm_runs():  # scikit-image comes with Scipion's packages
    _, noisy = _noisy_ball((12, 16, 16))
    out = baselines.nlm(noisy, h=0.8, patch_size=3, patch_distance=2)
    assert out.shape == noisy.shape and out.std() < noisy.std()


def test_grids_and_splits_are_consistent():
    for name, spec in methods.METHODS.items():
        assert spec["kind"] in ("method", "reference")
        if spec["grid"]:
            assert spec["region"] in ("full", "crop")
    for s in study.SETS.values():
        seeds = s["noisy"] + s["clean"] + [s["tune"]] + s["test"]
        assert len(seeds) == len(set(seeds)), "a seed is used twice in one set"
        assert s["tune"] not in s["test"]
    assert len(study.SETS["picking"]["test"]) >= 5
    crop = methods.crop(np.zeros((64, 256, 256)))
    assert crop.shape == (64, 128, 128)


def test_command_line_method_selection():
    import run_benchmark

    assert run_benchmark.parse([]).methods == methods.ORDER
    assert "dual" not in run_benchmark.parse(["--no-dual"]).methods
    assert run_benchmark.parse(["--methods", "dual", "nad", "--no-dual"]).methods == ["nad"]


def test_tables_from_results(tmp_path):
    entry = {
        "label": "Gaussian smoothing",
        "kind": "method",
        "params": {"sigma": 2.0},
        "mean": {"psnr_gm": 28.0, "ssim_gm": 0.4, "psnr_nf": 33.0, "ssim_nf": 0.6, "seconds": 0.1},
        "std": {"psnr_gm": 0.1, "ssim_gm": 0.01, "psnr_nf": 0.2, "ssim_nf": 0.02, "seconds": 0.0},
    }
    data = {
        "updated": "now",
        "last_command": "python bench/run_benchmark.py",
        "machine": {"cores": 2, "cpu": "cpu", "torch": "x", "torch_threads": 1},
        "set": {
            "name": "denoise",
            "noisy_seeds": [0],
            "clean_seeds": [4],
            "tuning_seed": 9,
            "test_seeds": [8],
            "phantom": {"shape": [64, 256, 256], "voxel_size": 10.0},
        },
        "methods": {"gaussian": entry},
    }
    with open(tmp_path / "denoise.json", "w") as f:
        json.dump(data, f)
    text = open(report.write_tables(str(tmp_path))).read()
    assert "Gaussian smoothing" in text and "28.00 ± 0.10" in text and "sigma=2.0" in text


def test_lowpass_fill_keeps_measured_coefficients():
    import run_wedge
    from dual_engine import wedge

    rng = np.random.default_rng(3)
    volume = rng.normal(size=(16, 24, 20)).astype(np.float32)
    filled = run_wedge.lowpass_fill(volume, sigma=1.0, iterations=3)
    keep = wedge.measured_weight(volume.shape, run_wedge.TILT_RANGE) == 1
    assert np.allclose(np.fft.rfftn(filled)[keep], np.fft.rfftn(volume)[keep], atol=1e-3)
    assert not np.allclose(filled, volume)
    assert np.array_equal(run_wedge.turned(run_wedge.turned(volume)), volume)


def test_realism_auc_and_spectrum():
    import run_realism

    class Fixed(run_realism.Classifier):
        def __init__(self, separable):
            import torch

            self.net = (
                (lambda x: x.mean(dim=(1, 2, 3, 4), keepdim=True)[:, :, 0, 0])
                if separable
                else (lambda x: torch.zeros(len(x), 1))
            )

    rng = np.random.default_rng(0)
    real = [np.ones((40, 40, 40), np.float32)]
    fake = [-np.ones((40, 40, 40), np.float32)]
    assert Fixed(True).auc(real, fake, 50, rng) == 1.0  # real patches all score higher
    assert 0.4 < Fixed(False).auc(real, fake, 50, rng) < 0.6  # ties: chance
    volume = rng.normal(size=(32, 32, 32)).astype(np.float32)
    assert run_realism.radial_log_spectrum(volume).shape == (32,)


def test_realism_giveaways_see_the_wedge_and_the_map():
    import run_realism
    from dual_engine import wedge

    rng = np.random.default_rng(0)
    white = rng.normal(size=(32, 48, 48)).astype(np.float32)
    tilts = (-60.0, 60.0)
    weight = wedge.measured_weight(white.shape, tilts, "y", transition=0.0)
    wedged = np.fft.irfftn(np.fft.rfftn(white) * weight, s=white.shape).astype(np.float32)
    flat, cut = run_realism.axis_power(white), run_realism.axis_power(wedged)
    assert all(0.8 < flat[a] < 1.2 for a in flat)
    assert cut["kz"] < 0.05 and cut["kx"] > 1.0  # the beam's cone is empty
    ratio = run_realism.wedge_power_ratio
    assert ratio(wedged, tilts) < 0.05 < ratio(white, tilts)
    stats = run_realism.noise_statistics(wedged + 0.5 * white, white)
    assert stats["grand_model_correlation"] > 0.3
    assert stats["neighbour_correlation_z"] > stats["neighbour_correlation_x"]


def test_realism_patch_features_see_a_noise_level_that_follows_the_structures():
    """A noise whose level follows a structure (what a simulator that passes its noise
    through a nonlinear network can do) spreads the local noise levels; a stationary
    noise (a reconstruction's) does not, and neither changes the sublattice spread."""
    import run_realism

    rng = np.random.default_rng(2)
    n = run_realism.PATCH
    noise = rng.normal(size=(n, n, n))
    structure = np.zeros((n, n, n))
    structure[: n // 2] = 1.0  # half the patch holds a structure
    stationary = run_realism.patch_features(0.3 * structure + noise)
    following = run_realism.patch_features(0.3 * structure + noise * (0.5 + structure))
    assert stationary["local_std_spread"] < 0.1 < following["local_std_spread"]
    assert abs(stationary["skewness"]) < 0.1 and abs(stationary["excess_kurtosis"]) < 0.2
    assert following["excess_kurtosis"] > 0.3  # a mixture of two noise levels
    assert stationary["sublattice_mean_spread"] < 0.05


def test_dual_rows_of_another_model_or_training_seed():
    import run_sim2real

    parse = run_sim2real.parse
    assert (parse([]).dual_key, parse([]).dual_label) == ("dual", None)
    seeded = parse(["--dual-seed", "2"])
    assert seeded.dual_key == "dual_seed2" and "training seed 2" in seeded.dual_label
    other = parse(["--model", "m.pt", "--label", "Spectrum loss 4, 400 it."])
    assert other.dual_key == "dual_spectrum_loss_4_400_it"
    assert other.dual_label == "DUAL, Spectrum loss 4, 400 it."
    changed = parse(["--dual-set", 'upsampling="linear-simulator"', "--dual-seed", "1"])
    assert changed.dual_set == {"upsampling": "linear-simulator"}
    assert changed.dual_key == "dual_upsamplinglinear_simulator_seed1"
    assert changed.dual_label == (
        "DUAL (engine defaults, fitted noise, upsampling linear-simulator, training seed 1)"
    )
    learned = parse(["--dual-noise-model", "learned", "--dual-seed", "1"])
    assert learned.dual_noise_model == "learned"
    assert learned.dual_key == "dual_learned_noise_seed1"
    assert learned.dual_label == "DUAL (engine defaults, learned noise, training seed 1)"
    assert parse(["--dual-noise-model", "learned"]).dual_key == "dual_learned_noise"
    labelled = parse(["--model", "m.pt", "--label", "X", "--dual-noise-model", "learned"])
    assert labelled.dual_key == "dual_x_learned_noise"
    for wrong in (
        ["--dual-noise-model", "physics"],
        ["--model", "m.pt"],
        ["--model", "m.pt", "--label", "x", "--dual-seed", "1"],
        ["--dual-set", "seed=1"],
        ["--dual-set", "upsampling=linear"],  # not JSON
        ["--dual-set", "upsampling"],
        ["--dual-set", 'upsampling="cubic"'],
        ["--dual-set", "no_such_setting=1"],
    ):
        with pytest.raises(SystemExit):
            parse(wrong)


def test_realism_classifier_curve_two_folds():
    import run_realism

    rng = np.random.default_rng(1)
    real = {k: rng.normal(size=(36, 36, 36)).astype(np.float32) for k in run_realism.REAL_SEEDS}
    fake = {k: v + 3.0 for k, v in real.items()}  # told apart by the mean
    folds = run_realism.classifier_curve(real, fake, [2, 30])
    assert [f["test"] for f in folds] == [f["train"] for f in reversed(folds)]
    assert [p["step"] for p in folds[0]["curve"]] == [2, 30]
    assert all(f["curve"][-1]["auc"] > 0.9 for f in folds)


def test_training_cost_counts_flops_and_time():
    import run_training

    small = dict(unet_width=2, code_size=4, noise_width=2, disc_width=2, subvolume_size=16)
    engine = run_training.measure_step(dict(small), "engine", steps=1)
    before = run_training.measure_step(dict(small), "two_denoiser_passes", steps=1)
    assert engine["memory_format"] == "channels_last_3d"
    assert before["memory_format"] == "contiguous_format"
    assert engine["seconds_per_iteration"] > 0
    # The same computation either way: the batched pass does not change the FLOPs.
    assert engine["gflop"] == pytest.approx(before["gflop"], rel=0.01) and engine["gflop"] > 0
    assert run_training.parse(["quality", "--set", "lr=0.001", "iterations=5"]).set == {
        "lr": 0.001,
        "iterations": 5,
    }


def test_train_with_snapshots_trains_once_and_scores_each_snapshot(tmp_path):
    from dual_engine.contract import DualConfig
    from dual_engine.io import write_mrc
    from dual_engine.model import load_model

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / ("v%d.mrc" % i)))
        write_mrc(paths[-1], rng.normal(size=(24, 24, 24)).astype(np.float32), 10.0)
    cfg = DualConfig(
        subvolume_size=16, unet_width=2, code_size=4, noise_width=2, disc_width=2,
        batch_size=2, iterations=5, noisy_contrast="same",
    )  # fmt: skip

    def score(path):
        return {"iteration_seen": float(load_model(path)[1]["iteration"])}

    outdir = str(tmp_path / "run")
    record = methods.train_with_snapshots(
        paths, paths, outdir, cfg, 2, 1, {"k": 1}, score, "iteration_seen"
    )
    assert [r["iteration"] for r in record["snapshots"]] == [2, 4, 5]
    assert [r["iteration_seen"] for r in record["snapshots"]] == [2.0, 4.0, 5.0]
    assert record["chosen_iteration"] == 5 and record["train_wall_seconds"] > 0
    # A second call reuses the record: nothing is trained again.
    again = methods.train_with_snapshots(
        paths, paths, outdir, cfg, 2, 1, {"k": 1}, score, "iteration_seen"
    )
    assert again["train_wall_seconds"] == record["train_wall_seconds"]


def test_sim2real_scores_a_perfect_and_a_shifted_segmentation(tmp_path):
    import run_sim2real
    from scipy import ndimage

    from dual_engine.io import read_mrc, read_particle_locations
    from dual_engine.synth.packing import CLASS_IDS
    from dual_engine.synth.phantom import make_phantom

    make_phantom(str(tmp_path), shape=(48, 96, 96), seed=2)
    truth = np.array(read_mrc(str(tmp_path / "class_mask.mrc"))[0], dtype=np.int64)
    centres = np.array(
        [
            p.xyz
            for p in read_particle_locations(str(tmp_path / "particle_locations.txt"))
            if p.name not in ("vesicle", "fiducial")
        ]
    )

    def scores(predicted, min_component=8):
        return run_sim2real.segmentation_scores(predicted, truth, centres, CLASS_IDS, min_component)

    perfect = scores(truth)
    assert perfect["mean_dice"] == 1.0 and perfect["dice_ribosome"] == 1.0
    # Every particle is found; a few split into parts (ring subunits, dimer globules
    # apart at the label threshold), which count as false picks.
    assert perfect["recall"] == 1.0 and perfect["precision"] > 0.7 and perfect["f1"] > 0.8
    shifted = scores(np.roll(truth, 6, axis=2))
    assert shifted["mean_dice"] < 0.5 and shifted["f1"] < perfect["f1"]
    empty = scores(np.zeros_like(truth))
    assert empty["mean_dice"] == 0.0 and empty["f1"] == 0.0 and empty["n_picks"] == 0
    # Small blobs in the background are false picks unless below the size rule.
    blobs = truth.copy()
    background = np.argwhere(ndimage.binary_erosion(truth == 0, iterations=3))
    for z, y, x in background[:: max(1, len(background) // 5)][:5]:
        blobs[z - 1 : z + 2, y - 1 : y + 2, x - 1 : x + 2] = CLASS_IDS["dimer"]
    assert scores(blobs)["n_picks"] == perfect["n_picks"] + 5
    assert scores(blobs)["precision"] < perfect["precision"]
    picking = ("precision", "recall", "f1", "n_picks")
    assert [scores(blobs, 28)[k] for k in picking] == [scores(truth, 28)[k] for k in picking]


def _rendered(tmp_path, results_file):
    """(tables.rst's text, the results) from one results file in the repository alone;
    the text is checked to be valid reStructuredText."""
    import shutil

    import docutils.core

    bench = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shutil.copy(os.path.join(bench, "results", results_file), tmp_path)
    text = open(report.write_tables(str(tmp_path))).read()
    docutils.core.publish_doctree(text, settings_overrides={"halt_level": 2})
    return text, json.load(open(tmp_path / results_file))


def test_realism_table_renders_the_recorded_results(tmp_path):
    """The realism section of tables.rst: one row per simulator with its held-out AUC."""
    text, data = _rendered(tmp_path, "realism.json")
    assert "Simulation realism" in text
    for entry in data["simulators"].values():
        assert entry["label"] in text and "%.3f" % entry["classifier_auc"] in text


def test_sim2real_row_is_the_mean_over_networks_with_their_spread():
    import run_sim2real

    def network(dice, f1):
        return {
            "training": {"seconds": 10.0},
            "per_test_seed": {
                8: {"mean_dice": dice - 0.01, "f1": f1},
                10: {"mean_dice": dice + 0.01, "f1": f1},
            },
        }

    row = run_sim2real.summary({0: network(0.3, 0.5), 1: network(0.5, 0.3)})
    assert row["mean"]["mean_dice"] == pytest.approx(0.4)
    assert row["mean"]["f1"] == pytest.approx(0.4)
    # the spread of the networks' means, not of the test tomograms
    assert row["std"]["mean_dice"] == pytest.approx(np.std([0.3, 0.5], ddof=1))
    assert row["seconds_per_network"] == 10.0
    assert run_sim2real.summary({0: network(0.3, 0.5)})["std"]["f1"] == 0.0


def test_sim2real_rows_compare_network_by_network():
    import run_sim2real

    def row(dices, seeds_as=int):
        return {
            "networks": {
                seeds_as(seed): {"per_test_seed": {8: {"mean_dice": d, "f1": 2 * d}}}
                for seed, d in enumerate(dices)
            }
        }

    # a row read back from JSON (string seeds) against a fresh one (int seeds)
    difference = run_sim2real.paired_difference(row([0.3, 0.5, 0.4], str), row([0.2, 0.5, 0.3]))
    assert difference["mean_dice"] == pytest.approx(
        [np.mean([0.1, 0, 0.1]), np.std([0.1, 0, 0.1], ddof=1)]
    )
    assert difference["f1"][0] == pytest.approx(2 * difference["mean_dice"][0])
    # one shared seed has no spread to give
    assert run_sim2real.paired_difference(row([0.3]), row([0.2, 0.5])) is None


def test_sim2real_table_renders_the_recorded_results(tmp_path):
    """The sim-to-real section of tables.rst: one row per training set with its mean
    Dice and F1 over the networks."""
    text, data = _rendered(tmp_path, "sim2real.json")
    assert "Sim-to-real segmentation" in text
    for entry in data["methods"].values():
        assert entry["label"] in text and "%.3f" % entry["mean"]["f1"] in text
        assert entry["networks"]
