"""Overlap-tile inference: denoise and simulate keep the input's grid, tiles leave no
seams, and a trained denoiser brings a phantom tomogram closer to its grand model."""

import os

import numpy as np
import pytest
import torch

from dual_engine.infer import apply_tiled, denoise, simulate
from dual_engine.io import InputError, read_mrc, read_particle_locations, write_mrc
from dual_engine.metrics import pearson
from dual_engine.nets import UNet3D, orthogonal_init
from dual_engine.contract import MODEL_FILE as MODEL
from dual_engine.contract import NOISE_MODELS, UNET_UPSAMPLINGS, tile_layout
from dual_engine.train import train

from test_spectral import cone_ratio, spectrum_distance
from test_train import phantom_domains, tiny_config

WEDGE_BAND = (0.05, 0.3)  # cycles/voxel where the phantom's cone power is compared


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained on phantoms (noisy 0-1, clean 2-3) and a held-out pair (4)."""
    root = tmp_path_factory.mktemp("trained")
    noisy, clean = phantom_domains(root, phantoms=5)
    # Small, but at the paper's 32^3 subvolumes: ~120 iterations already denoise.
    cfg = tiny_config(
        subvolume_size=32,
        unet_width=8,
        code_size=8,
        noise_width=8,
        disc_width=8,
        batch_size=4,
        iterations=120,
        log_every=40,
        checkpoint_every=1000,
    )
    train(noisy, clean, str(root / "model"), cfg, threads=2)
    return str(root / "model" / MODEL), str(root / "4")


@pytest.mark.parametrize("upsampling", UNET_UPSAMPLINGS)
def test_tiles_cover_the_volume_without_seams(upsampling):
    torch.manual_seed(0)
    net = orthogonal_init(UNet3D(width=4, depth=2, upsampling=upsampling)).eval()
    volume = np.random.default_rng(0).normal(size=(40, 52, 60)).astype(np.float32)
    with torch.no_grad():
        whole = net(torch.from_numpy(np.pad(volume, 20, mode="reflect"))[None, None])[0, 0]
    whole = whole.numpy()[20:-20, 20:-20, 20:-20]
    # The overlap covers the U-Net's receptive radius (23 or 26 voxels at depth 2), and
    # tile starts keep the pooling grid: away from the borders, tiling changes nothing.
    tiled = apply_tiled(volume, net, tile=64, multiple=4)  # overlap: receptive radius
    assert tiled.shape == volume.shape
    inner = (slice(12, -12),) * 3
    np.testing.assert_allclose(tiled[inner], whole[inner], atol=1e-4)
    # A thin volume gets flat tiles (16 + 2 x the overlap along z, 96 across): same result.
    overlap = tile_layout(96, net.receptive_radius, 4)[1]
    thin = np.random.default_rng(2).normal(size=(16, 92, 72)).astype(np.float32)
    with torch.no_grad():
        padded = np.pad(thin, overlap, mode="reflect")
        whole = net(torch.from_numpy(padded)[None, None])[0, 0]
    whole = whole.numpy()[(slice(overlap, -overlap),) * 3]
    tiled = apply_tiled(thin, net, tile=96, overlap=overlap)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


def test_volume_smaller_than_a_tile():
    small = np.random.default_rng(1).normal(size=(5, 9, 7)).astype(np.float32)
    out = apply_tiled(small, lambda t: t * 2, tile=64, overlap=16)
    np.testing.assert_allclose(out, small * 2)


def test_denoise_keeps_grid_and_moves_towards_ground_truth(trained, tmp_path):
    model, held_out = trained
    tomogram = os.path.join(held_out, "reconstruction.mrc")
    out = str(tmp_path / "denoised.mrc")
    denoise(model, tomogram, out, threads=2)
    raw, voxel = read_mrc(tomogram)
    result, out_voxel = read_mrc(out)
    truth = read_mrc(os.path.join(held_out, "grandmodel.mrc"))[0]
    assert result.shape == raw.shape and out_voxel == voxel
    assert pearson(truth, result) > pearson(truth, raw) + 0.15


def test_denoise_other_voxel_size_and_tiny_volume(trained, tmp_path):
    model, held_out = trained
    raw = read_mrc(os.path.join(held_out, "reconstruction.mrc"))[0]
    coarse = str(tmp_path / "coarse.mrc")
    write_mrc(coarse, raw[::2, ::2, ::2], 20.0)  # model works at 10 A
    denoise(model, coarse, str(tmp_path / "coarse_dn.mrc"))
    out, voxel = read_mrc(str(tmp_path / "coarse_dn.mrc"))
    assert out.shape == raw[::2, ::2, ::2].shape and voxel == 20.0
    tiny = str(tmp_path / "tiny.mrc")
    write_mrc(tiny, raw[:6, :10, :12], 10.0)
    denoise(model, tiny, str(tmp_path / "tiny_dn.mrc"))
    assert read_mrc(str(tmp_path / "tiny_dn.mrc"))[0].shape == (6, 10, 12)


@pytest.mark.parametrize("noise_model", NOISE_MODELS)
def test_simulate_seeded_variants(trained, tmp_path, noise_model):
    model, held_out = trained
    clean = os.path.join(held_out, "grandmodel.mrc")
    # a fixed thread count: the default one follows the machine's load, and conv3d's
    # float sums follow the thread count (the learned model differs by ~1e-6 then)
    kw = dict(noise_model=noise_model, threads=2)
    first = simulate(model, clean, str(tmp_path / "a"), variants=2, seed=5, **kw)["outputs"]
    again = simulate(model, clean, str(tmp_path / "b"), variants=1, seed=5, **kw)["outputs"]
    other = simulate(model, clean, str(tmp_path / "c"), variants=1, seed=6, **kw)["outputs"]
    v0, v1 = read_mrc(first[0])[0], read_mrc(first[1])[0]
    np.testing.assert_array_equal(v0, read_mrc(again[0])[0])
    assert not np.array_equal(v0, v1)
    assert not np.array_equal(v0, read_mrc(other[0])[0])
    truth, voxel = read_mrc(clean)
    assert v0.shape == truth.shape and read_mrc(first[0])[1] == voxel
    assert np.all(np.isfinite(v0)) and v0.std() > 0
    # Plausible: the synthetic tomogram still carries the map's structure.
    assert pearson(truth, v0) > 0.1


def test_fitted_simulation_is_closer_to_a_real_tomogram(trained, tmp_path):
    """On the held-out phantom: the fitted noise model's tomogram of its grand model has
    the spectrum and missing wedge of the phantom's own reconstruction, its spectrum
    closer than the learned one's (a short training's)."""
    model, held_out = trained
    clean = os.path.join(held_out, "grandmodel.mrc")
    real = read_mrc(os.path.join(held_out, "reconstruction.mrc"))[0]
    tilt = tuple(_phantom_tilt_range(held_out))
    scores = {}
    for noise_model in NOISE_MODELS:
        out = simulate(model, clean, str(tmp_path / noise_model), noise_model=noise_model)
        volume = read_mrc(out["outputs"][0])[0]
        scores[noise_model] = (
            spectrum_distance(volume, real),
            cone_ratio(volume, tilt, WEDGE_BAND) / cone_ratio(real, tilt, WEDGE_BAND),
        )
    assert scores["fitted"][0] < scores["learned"][0], scores
    assert scores["fitted"][0] < 0.1 and 0.7 < scores["fitted"][1] < 1.3, scores


def _phantom_tilt_range(folder):
    import json

    with open(os.path.join(folder, "phantom.json")) as f:
        return json.load(f)["parameters"]["tilt_range"]


@pytest.mark.parametrize("spectra", ["none", "earlier grid"])
def test_simulate_without_fitted_spectra(trained, tmp_path, spectra):
    """A model file without the fitted noise model (one from before it), or with one
    binned on an earlier version's grid, is refused for 'fitted' before anything is
    written, and still simulates with 'learned'."""
    model, held_out = trained
    state = torch.load(model, weights_only=True)
    if spectra == "none":
        del state["spectra"]
    else:
        coarse = torch.ones(8, 64, 64, 33)  # the 0.1.0 development versions' grid
        state["spectra"] = dict(state["spectra"], transfer=coarse, noise_power=coarse)
    old = str(tmp_path / "old.pt")
    torch.save(state, old)
    clean = os.path.join(held_out, "grandmodel.mrc")
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no fitted noise model.*'learned'.*--resume"):
        simulate(old, clean, str(out))
    assert not out.exists() or not os.listdir(out)
    assert os.path.exists(simulate(old, clean, str(out), noise_model="learned")["outputs"][0])


def test_simulate_labels_follow_the_map(trained, tmp_path):
    model, held_out = trained
    clean = os.path.join(held_out, "grandmodel.mrc")
    result = simulate(model, clean, str(tmp_path), variants=2, seed=1)
    assert len(result["labels"]) == 2
    for synthetic, labels in zip(result["outputs"], result["labels"]):
        stem = synthetic[: -len(".mrc")]
        assert labels["class_mask.mrc"] == stem + "_class_mask.mrc"
        tomogram, voxel = read_mrc(synthetic)
        for name in ("class_mask.mrc", "occupancy_mask.mrc"):
            mask, mask_voxel = read_mrc(labels[name])
            source = read_mrc(os.path.join(held_out, name))[0]
            assert mask.shape == tomogram.shape and mask_voxel == voxel
            np.testing.assert_array_equal(mask, source)
        particles = read_particle_locations(labels["particle_locations.txt"])
        assert particles == read_particle_locations(
            os.path.join(held_out, "particle_locations.txt")
        )
        assert len(particles) > 0
    # The particles are where the synthetic tomogram's density is: the class mask's
    # voxels are brighter on average than the background (same contrast as the map).
    mask = read_mrc(result["labels"][0]["class_mask.mrc"])[0]
    tomogram = read_mrc(result["outputs"][0])[0]
    assert tomogram[mask > 0].mean() > tomogram[mask == 0].mean()


def test_simulate_refuses_labels_off_the_grid(trained, tmp_path):
    model, held_out = trained
    folder = tmp_path / "model"
    folder.mkdir()
    truth, voxel = read_mrc(os.path.join(held_out, "grandmodel.mrc"))
    write_mrc(str(folder / "grandmodel.mrc"), np.array(truth), voxel)
    write_mrc(str(folder / "class_mask.mrc"), np.zeros((4, 8, 8), np.int16), voxel)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="labels must lie on the map's grid"):
        simulate(model, str(folder / "grandmodel.mrc"), str(out))
    assert not out.exists() or not os.listdir(out)
    os.remove(folder / "class_mask.mrc")
    (folder / "particle_locations.txt").write_text("ribosome 1 2 9999 0 0 0\n")
    with pytest.raises(InputError, match="lies outside its map"):
        simulate(model, str(folder / "grandmodel.mrc"), str(out))


def test_not_a_model_file(tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a model")
    with pytest.raises(InputError, match="not a DUAL model"):
        denoise(str(bogus), str(bogus), str(tmp_path / "out.mrc"))
