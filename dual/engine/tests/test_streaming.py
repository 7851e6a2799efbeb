"""Streamed inference (streaming.py): the slab-wise passes give what the in-memory ones
give, and the output does not depend on how the volume is cut into tiles or slabs."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from dual_engine import streaming
from dual_engine.contract import UNET_UPSAMPLINGS
from dual_engine.infer import apply_tiled, denoise_on_input_grid, load_network, simulate
from dual_engine.io import read_mrc, rescale, resize_to_shape, write_mrc
from dual_engine.nets import UNet3D, orthogonal_init


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.25, 2.0])
def test_slab_resampling_equals_scipy_zoom(monkeypatch, factor):
    """Slab by slab, as scipy's whole-volume zoom (linear, pixel edges aligned, edges
    clamped; a Gaussian low-pass first when downsampling)."""
    volume = np.random.default_rng(0).normal(size=(23, 30, 27)).astype(np.float32)
    smoothed = ndimage.gaussian_filter(volume, 0.5 / factor * 0.85) if factor < 1 else volume
    expected = ndimage.zoom(smoothed, factor, order=1, mode="nearest", grid_mode=True)
    monkeypatch.setattr(streaming, "SLAB_VOXELS", 30 * 27 * 3)  # many thin slabs
    target = rescale(volume, 10.0 * factor, 10.0)
    assert target.shape == expected.shape
    np.testing.assert_allclose(target, expected, atol=2e-5)
    back = resize_to_shape(target, volume.shape)
    zoomed = ndimage.zoom(
        target,
        [n / m for n, m in zip(volume.shape, target.shape)],
        order=1,
        mode="nearest",
        grid_mode=True,
    )
    assert back.shape == volume.shape
    np.testing.assert_allclose(back, zoomed, atol=2e-5)


def test_reflected_indices_are_numpys_reflect_padding():
    for n in (1, 2, 5, 9):
        padded = np.pad(np.arange(n), 20, mode="reflect")
        np.testing.assert_array_equal(streaming.reflect_indices(-20, n + 20, n), padded)


def test_statistics_and_new_volumes_by_slabs(tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "SLAB_VOXELS", 100)
    volume = np.random.default_rng(1).normal(3.0, 2.0, size=(12, 10, 11)).astype(np.float32)
    stats = streaming.slab_statistics(volume)
    assert stats["mean"] == pytest.approx(float(volume.mean(dtype=np.float64)), abs=1e-6)
    assert stats["std"] == pytest.approx(float(volume.std(dtype=np.float64)), rel=1e-6)
    path = tmp_path / "out.mrc"
    with streaming.new_volume(path, volume.shape, 7.5) as out:
        out[:] = volume
        assert not path.exists()  # appears only when complete
    data, voxel_size = read_mrc(path)
    np.testing.assert_array_equal(data, volume)
    assert voxel_size == pytest.approx(7.5)
    np.testing.assert_array_equal(streaming.open_volume(path), volume)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny untrained-but-saved model: streaming is about bookkeeping, not quality."""
    from dual_engine.contract import DualConfig
    from dual_engine.model import MODEL_FORMAT, build

    root = tmp_path_factory.mktemp("stream")
    cfg = DualConfig(
        voxel_size=10.0,
        subvolume_size=16,
        unet_width=4,
        code_size=4,
        noise_width=4,
        disc_width=4,
        batch_size=2,
    )
    generators, _ = build(cfg)
    path = str(root / "model.pt")
    torch.save(
        {
            "format": MODEL_FORMAT,
            "config": cfg.to_dict(),
            "iteration": 1,
            "generators": generators.state_dict(),
        },
        path,
    )
    return path


@pytest.mark.parametrize("voxel_size", [10.0, 13.0])
def test_streamed_denoise_equals_the_in_memory_pipeline(model, tmp_path, voxel_size):
    from dual_engine.infer import denoise

    volume = np.random.default_rng(2).normal(size=(20, 44, 50)).astype(np.float32)
    path = str(tmp_path / "t.mrc")
    write_mrc(path, volume, voxel_size)
    out = str(tmp_path / "d.mrc")
    denoise(model, path, out, tile=32, threads=1)
    streamed, out_voxel = read_mrc(out)
    cfg, generators, device = load_network(model, "cpu", 1)
    expected, _ = denoise_on_input_grid(cfg, generators, path, tile=32)
    assert streamed.shape == volume.shape and out_voxel == pytest.approx(voxel_size)
    np.testing.assert_allclose(streamed, expected, atol=1e-4)


def test_simulation_does_not_depend_on_the_tiling(model, tmp_path):
    volume = np.random.default_rng(3).normal(size=(20, 40, 44)).astype(np.float32)
    path = str(tmp_path / "map.mrc")
    write_mrc(path, volume, 10.0)
    # the learned noise model runs the network in tiles (the fitted one has no tiles)
    learned = dict(noise_model="learned", threads=1)
    small = simulate(model, path, str(tmp_path / "a"), seed=4, tile=32, **learned)
    large = simulate(model, path, str(tmp_path / "b"), seed=4, tile=96, **learned)
    a, b = read_mrc(small["outputs"][0])[0], read_mrc(large["outputs"][0])[0]
    np.testing.assert_allclose(a, b, atol=1e-4)
    other = simulate(model, path, str(tmp_path / "c"), seed=5, tile=32, **learned)
    assert not np.allclose(a, read_mrc(other["outputs"][0])[0])


@pytest.mark.parametrize("upsampling", UNET_UPSAMPLINGS)
def test_tiles_in_memory_and_streamed_agree(upsampling):
    torch.manual_seed(0)
    net = orthogonal_init(UNet3D(width=4, depth=2, upsampling=upsampling)).eval()
    volume = np.random.default_rng(4).normal(size=(18, 40, 36)).astype(np.float32)
    whole = apply_tiled(volume, net, tile=128)
    tiled = apply_tiled(volume, net, tile=32)
    np.testing.assert_allclose(tiled, whole, atol=1e-4)


@pytest.mark.parametrize("tilt_axis", ["y", "x"])
def test_flip_average_is_the_mean_over_the_wedge_preserving_flips(tilt_axis):
    """FlipAveraged gives the same output (flipped) for every wedge-preserving flip of
    its input, and equals the mean of the four flipped passes computed by hand."""
    from dual_engine.data import wedge_preserving_flips
    from dual_engine.infer import FlipAveraged

    torch.manual_seed(1)
    net = orthogonal_init(UNet3D(width=4, depth=2)).eval()
    averaged = FlipAveraged(net, tilt_axis)
    x = torch.randn(1, 1, 16, 24, 20)
    along, across = wedge_preserving_flips(tilt_axis)
    with torch.no_grad():
        out = averaged(x)
        by_hand = (
            sum(
                torch.flip(net(torch.flip(x, dims)), dims) if dims else net(x)
                for dims in [(), (along[0] + 2,), tuple(a + 2 for a in across)]
                + [tuple(a + 2 for a in along + across)]
            )
            / 4
        )
        torch.testing.assert_close(out, by_hand)
        for group in (along, across):
            dims = tuple(a + 2 for a in group)
            torch.testing.assert_close(averaged(torch.flip(x, dims)), torch.flip(out, dims))
        assert not torch.allclose(out, net(x), atol=1e-4)  # the network alone is not symmetric
    assert (averaged.receptive_radius, averaged.multiple) == (net.receptive_radius, net.multiple)


def test_flip_averaged_denoise_streams_and_tiles_like_the_whole_volume(model, tmp_path):
    """denoise(flip_average=True) gives the flip-averaged network over the whole volume,
    whatever the tile, on the input's grid."""
    from dual_engine.infer import FlipAveraged, denoise

    volume = np.random.default_rng(5).normal(size=(20, 40, 36)).astype(np.float32)
    path = str(tmp_path / "t.mrc")
    write_mrc(path, volume, 10.0)
    report = denoise(model, path, str(tmp_path / "a.mrc"), tile=32, threads=1, flip_average=True)
    assert report["flip_average"] is True
    denoise(model, path, str(tmp_path / "plain.mrc"), tile=32, threads=1)
    cfg, generators, _ = load_network(model, "cpu", 1)
    standardised = (volume - volume.mean(dtype=np.float64)) / volume.std(dtype=np.float64)
    whole = apply_tiled(standardised, FlipAveraged(generators.denoiser, cfg.tilt_axis), tile=128)
    averaged, voxel_size = read_mrc(str(tmp_path / "a.mrc"))
    assert averaged.shape == volume.shape and voxel_size == pytest.approx(10.0)
    np.testing.assert_allclose(averaged, whole, atol=1e-4)
    assert not np.allclose(averaged, read_mrc(str(tmp_path / "plain.mrc"))[0], atol=1e-3)
