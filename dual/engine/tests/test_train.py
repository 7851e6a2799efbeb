"""DUAL training on tiny phantoms: losses, checkpoints, resumption, DDP, bad input."""

import itertools
import json
import os
import shutil

import numpy as np
import pytest
import torch

from dual_engine import spectral
from dual_engine.data import load_for_model
from dual_engine.io import InputError, write_mrc
from dual_engine.model import DualConfig, load_generators, load_model
from dual_engine.synth.phantom import make_phantom
from dual_engine.contract import (
    CHECKPOINT_FILE as CHECKPOINT,
    MODEL_FILE as MODEL,
    SNAPSHOT_DIR,
    TRAINING_LOG as LOG,
    snapshot_name,
)
from dual_engine.train import train

SHAPE = (48, 96, 96)


def tiny_config(**changes):
    """A model small enough to train for a few iterations in seconds on a CPU."""
    values = dict(
        subvolume_size=16,
        unet_width=4,
        unet_depth=2,
        code_size=4,
        noise_width=4,
        disc_width=4,
        batch_size=2,
        iterations=6,
        log_every=1,
        checkpoint_every=3,
    )
    values.update(changes)
    return DualConfig(**values)


def phantom_domains(root, phantoms=4):
    """Phantoms 0..phantoms-1 in root/<seed>; noisy domain: reconstructions of 0-1,
    clean domain: grand models of 2-3 (other specimens: the domains are unpaired)."""
    for seed in range(phantoms):
        make_phantom(str(root / str(seed)), shape=SHAPE, seed=seed, write_halves=True)
    noisy = [str(root / str(s) / "reconstruction.mrc") for s in (0, 1)]
    clean = [str(root / str(s) / "grandmodel.mrc") for s in (2, 3)]
    return noisy, clean


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return phantom_domains(tmp_path_factory.mktemp("domains"))


def weights(path):
    return load_model(path)[1]["generators"]


def log_records(outdir):
    with open(os.path.join(outdir, LOG)) as f:
        return [json.loads(line) for line in f]


def test_reconstruction_losses_decrease(domains, tmp_path):
    noisy, clean = domains
    train(noisy, clean, str(tmp_path), tiny_config(iterations=60, checkpoint_every=100), threads=2)
    records = log_records(str(tmp_path))
    assert [r["iteration"] for r in records] == list(range(1, 61))
    rec = [r["rec_clean"] + r["rec_noisy"] for r in records]
    assert np.mean(rec[-10:]) < np.mean(rec[:10]) - 0.2
    assert all(np.isfinite(r["loss"]) and r["eta_seconds"] >= 0 for r in records)
    assert os.path.exists(tmp_path / MODEL)


def test_resumed_run_equals_uninterrupted_run(domains, tmp_path):
    """A run killed after iteration 3 and resumed ends bit-identical to one that was not
    (weights, their moving average, the learning-rate schedule, the sampling streams)."""
    noisy, clean = domains
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    train(noisy, clean, straight, tiny_config(snapshot_every=3), threads=1)
    # What a kill after iteration 3 leaves: its checkpoint and the log up to it.
    os.makedirs(killed)
    shutil.copyfile(
        os.path.join(straight, SNAPSHOT_DIR, snapshot_name(3)), os.path.join(killed, CHECKPOINT)
    )
    with open(os.path.join(straight, LOG)) as f, open(os.path.join(killed, LOG), "w") as g:
        g.writelines(f.readlines()[:3])
    summary = train(noisy, clean, killed, tiny_config(), resume=True, threads=1)
    assert summary["iterations"] == 6
    a, b = load_model(os.path.join(straight, MODEL))[1], load_model(os.path.join(killed, MODEL))[1]
    for key in ("generators", "generators_average", "discriminators"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert [r["iteration"] for r in log_records(killed)] == list(range(1, 7))
    assert log_records(killed) == [
        dict(r, seconds=s["seconds"], eta_seconds=s["eta_seconds"])
        for r, s in zip(log_records(straight), log_records(killed))
    ]


def test_learning_rate_falls_to_zero_and_the_model_keeps_the_average(domains, tmp_path):
    noisy, clean = domains
    train(noisy, clean, str(tmp_path), tiny_config(iterations=8, lr_decay=0.5), threads=1)
    rates = [r["lr"] for r in log_records(str(tmp_path))]
    lr = DualConfig().lr
    # Constant for the first half, then linear to lr/4 at the last step (iteration 8).
    assert rates == pytest.approx([lr] * 5 + [lr * 0.75, lr * 0.5, lr * 0.25])
    state = load_model(os.path.join(str(tmp_path), MODEL))[1]
    average, last = state["generators_average"], state["generators"]
    assert not all(torch.equal(average[k], last[k]) for k in last)
    # Inference uses the average.
    used = load_generators(os.path.join(str(tmp_path), MODEL))[1].state_dict()
    assert all(torch.equal(used[k], average[k]) for k in average)


def test_snapshots_and_quality_signals(domains, tmp_path):
    noisy, clean = domains
    train(noisy, clean, str(tmp_path), tiny_config(snapshot_every=2), threads=1)
    names = sorted(os.listdir(tmp_path / SNAPSHOT_DIR))
    assert names == [snapshot_name(i) for i in (2, 4, 6)]
    assert load_model(str(tmp_path / SNAPSHOT_DIR / names[0]))[1]["iteration"] == 2
    records = log_records(str(tmp_path))
    for key in ("monitor_cycle", "monitor_spectrum"):
        values = [r[key] for r in records]
        assert all(np.isfinite(values)) and min(values) >= 0 and len(set(values)) > 1


def test_continue_from_model_file(domains, tmp_path):
    noisy, clean = domains
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    train(noisy, clean, first, tiny_config(iterations=4), threads=1)
    summary = train(
        noisy,
        clean,
        second,
        tiny_config(iterations=7),
        init_model=os.path.join(first, MODEL),
        threads=1,
    )
    assert summary["iterations"] == 7
    assert [r["iteration"] for r in log_records(second)] == [5, 6, 7]
    # It trained on from the first model's weights, not from a fresh initialisation.
    fresh = str(tmp_path / "fresh")
    train(noisy, clean, fresh, tiny_config(iterations=3), threads=1)
    a, b = weights(os.path.join(second, MODEL)), weights(os.path.join(fresh, MODEL))
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_ddp_on_two_cpu_processes(domains, tmp_path):
    noisy, clean = domains
    summary = train(
        noisy, clean, str(tmp_path), tiny_config(iterations=3), device="cpu", processes=2, threads=1
    )
    assert summary["processes"] == 2 and summary["iterations"] == 3
    # Each process samples different subvolumes; all-reduced gradients keep them equal.
    assert summary["replica_weight_spread"] == 0.0
    assert os.path.exists(tmp_path / MODEL)


def test_bad_inputs(domains, tmp_path):
    noisy, clean = domains
    with pytest.raises(InputError, match="smaller than the 64"):
        train(noisy, clean, str(tmp_path), tiny_config(subvolume_size=64))
    with pytest.raises(InputError, match="not found"):
        train([str(tmp_path / "missing.mrc")], clean, str(tmp_path), tiny_config())
    nan = np.zeros((32, 32, 32), np.float32)
    nan[0, 0, 0] = np.nan
    write_mrc(tmp_path / "nan.mrc", nan, 10.0)
    with pytest.raises(InputError, match="NaN"):
        train([str(tmp_path / "nan.mrc")], clean, str(tmp_path), tiny_config())
    with pytest.raises(InputError, match="batch_size must be >= 2"):
        train(noisy, clean, str(tmp_path), tiny_config(batch_size=1))
    with pytest.raises(InputError, match="no volumes"):
        train([], clean, str(tmp_path), tiny_config())
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            train(noisy, clean, str(tmp_path), tiny_config(), device="cuda")


def halves_of(noisy):
    """The even and odd halves of the noisy phantoms' reconstructions, in order."""
    return [
        path.replace("reconstruction.mrc", "reconstruction_%s.mrc" % half)
        for path in noisy
        for half in ("even", "odd")
    ]


def test_even_odd_halves_give_the_noise_model_its_share_of_structure(domains, tmp_path):
    """After a few iterations the learned simulator knows little; with the noisy
    tomograms' halves the noise model measures its share of structure on them and has
    the noise of the paired reference (the tomograms with their own grand models)."""
    noisy, clean = domains
    cfg = tiny_config(iterations=2)
    summaries, spectra = {}, {}
    for name, halves in (("learned", None), ("halves", halves_of(noisy))):
        out = str(tmp_path / name)
        summaries[name] = train(noisy, clean, out, cfg, threads=1, noisy_halves=halves)
        spectra[name] = load_model(os.path.join(out, MODEL))[1]["spectra"]
    assert summaries["learned"]["noise_share"] == "learned simulator"
    assert summaries["halves"]["noise_share"] == "even/odd halves"
    assert summaries["halves"]["noisy_halves"] == [halves_of(noisy)[:2], halves_of(noisy)[2:]]
    real = [load_for_model(p, cfg.voxel_size)[0] for p in noisy]
    maps = [
        load_for_model(p.replace("reconstruction", "grandmodel"), cfg.voxel_size)[0] for p in noisy
    ]
    reference = spectral.fit_paired(real, maps, cfg.tilt_axis)["noise_power"].sum()
    assert float(spectra["halves"]["noise_power"].sum()) == pytest.approx(float(reference), rel=0.1)
    assert abs(float(spectra["learned"]["noise_power"].sum()) / float(reference) - 1) > 0.1


def test_bad_halves_are_refused_before_any_work(domains, tmp_path):
    noisy, clean = domains
    halves = halves_of(noisy)
    out = tmp_path / "run"
    with pytest.raises(InputError, match="two halves .* 2 volumes, 3 halves"):
        train(noisy, clean, str(out), tiny_config(), noisy_halves=halves[:3])
    small = tmp_path / "small.mrc"
    write_mrc(small, np.zeros((32, 96, 96), np.float32), 10.0)
    with pytest.raises(InputError, match="small.mrc: shape"):
        train(noisy, clean, str(out), tiny_config(), noisy_halves=[str(small)] + halves[1:])
    other = tmp_path / "other.mrc"
    write_mrc(other, np.zeros(SHAPE, np.float32), 8.0)
    with pytest.raises(InputError, match="other.mrc: voxel size 8 A"):
        train(noisy, clean, str(out), tiny_config(), noisy_halves=halves[:3] + [str(other)])
    with pytest.raises(InputError, match="must be two other files"):
        train(noisy, clean, str(out), tiny_config(), noisy_halves=[halves[0]] * 2 + halves[2:])
    with pytest.raises(InputError, match="only denoise training"):
        train(noisy, clean, str(out), tiny_config(task="wedge"), noisy_halves=halves)
    with pytest.raises(InputError, match="not found"):
        train(noisy, clean, str(out), tiny_config(), noisy_halves=halves[:3] + ["gone.mrc"])
    assert not out.exists()


def test_batched_denoiser_pass_equals_two_passes():
    """Dn runs once on t_f and t_r together; each half is what Dn gives on its own."""
    from dual_engine.model import build

    cfg = tiny_config()
    generators, _ = build(cfg)
    rng = torch.Generator().manual_seed(0)
    noisy, clean = torch.randn(2, 2, 1, 16, 16, 16, generator=rng)
    z = torch.randn(2, cfg.code_size, generator=rng)
    with torch.no_grad():
        out = generators(noisy, clean, z, generator=torch.Generator().manual_seed(1))
        fake_noisy = generators.simulate(clean, z, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(out["fake_noisy"], fake_noisy)
        torch.testing.assert_close(out["rec_clean"], generators.denoiser(fake_noisy))
        torch.testing.assert_close(out["fake_clean"], generators.denoiser(noisy))


def test_noise_scale_fixes_the_noise_level_and_old_models_keep_theirs():
    """noise_scale > 0: every noise volume of Gn has that standard deviation, whatever
    the code; 0 (and a model file from before the setting): Gn's output as learned."""
    from dual_engine.model import build

    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    fixed, _ = build(tiny_config(noise_scale=2.5))
    with torch.no_grad():
        noise = fixed.noise_decoder(z)
    assert noise.shape == (3, 1, 16, 16, 16)
    torch.testing.assert_close(
        noise.flatten(1).std(dim=1), torch.full((3,), 2.5), rtol=1e-2, atol=0
    )
    free, _ = build(tiny_config(noise_scale=0.0))
    with torch.no_grad():
        assert not torch.allclose(
            free.noise_decoder(z).flatten(1).std(dim=1), torch.full((3,), 2.5)
        )
    legacy = tiny_config().to_dict()
    del legacy["noise_scale"], legacy["lambda_spectrum"]
    older = DualConfig.from_dict(legacy)
    assert (older.noise_scale, older.lambda_spectrum) == (0.0, 0.0)
    assert DualConfig.from_dict(tiny_config().to_dict()) == tiny_config()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_upsampling_leaves_no_period_two_pattern(seed):
    """The U-Nets' linear upsampling gives every voxel of a 2x2x2 block the same
    treatment; the transposed convolution gives each its own kernel, and the means of
    the 8 interleaved sublattices of its output differ (a pattern that told every
    simulation from a real tomogram: bench/run_realism.py)."""
    from dual_engine.nets import UNet3D, orthogonal_init

    def sublattice_spread(upsampling):
        torch.manual_seed(seed)
        net = orthogonal_init(UNet3D(width=4, depth=2, upsampling=upsampling)).eval()
        x = torch.randn(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(9))
        with torch.no_grad():
            y = net(x)[:, 0, 4:-4, 4:-4, 4:-4]  # away from the zero padding
        y = (y - y.mean()) / y.std()
        means = [y[:, a::2, b::2, c::2].mean() for a, b, c in itertools.product((0, 1), repeat=3)]
        return torch.stack(means).std().item()

    assert sublattice_spread("linear") < 0.05
    assert sublattice_spread("transposed") > 0.1


@pytest.mark.parametrize("upsampling", [None, "linear-simulator", "linear", "transposed"])
def test_model_files_load_with_their_upsampling(tmp_path, upsampling):
    """A model file's networks load with the upsampling its settings name (per network:
    linear-simulator is a linear Gs and a transposed Dn); settings without it (files
    from before the setting) hold transposed-convolution weights."""
    from dual_engine.contract import unet_upsampling
    from dual_engine.model import MODEL_FORMAT, build

    assert unet_upsampling("linear-simulator", "simulator") == "linear"
    assert unet_upsampling("linear-simulator", "denoiser") == "transposed"
    generators, _ = build(tiny_config(upsampling=upsampling or "transposed"))
    settings = tiny_config(upsampling=upsampling or "transposed").to_dict()
    if upsampling is None:
        del settings["upsampling"]
    path = str(tmp_path / "model.pt")
    state = {"format": MODEL_FORMAT, "config": settings, "iteration": 1}
    torch.save(dict(state, generators=generators.state_dict()), path)
    cfg, loaded = load_generators(path)
    assert cfg.upsampling == (upsampling or "transposed")
    assert loaded.structural_generator.upsampling == unet_upsampling(cfg.upsampling, "simulator")
    assert loaded.denoiser.upsampling == unet_upsampling(cfg.upsampling, "denoiser")
    for name, tensor in generators.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)


def test_spectrum_loss_is_logged_and_weighted(domains, tmp_path):
    noisy, clean = domains
    train(noisy, clean, str(tmp_path), tiny_config(iterations=2, lambda_spectrum=1.0), threads=2)
    records = log_records(str(tmp_path))
    assert all(r["spectrum"] > 0 for r in records)
