"""The contract (contract.py): option classes, shared rules and random streams."""

import dataclasses
import itertools

import numpy as np
import pytest

from dual_engine import contract
from dual_engine.contract import (
    COMMANDS,
    DualConfig,
    InputError,
    Job,
    check_tilt_range,
    make_job,
    numpy_rng,
    read_particle_locations,
    seed_sequence,
    torch_seed,
)


def test_contract_imports_neither_torch_nor_scipion():
    """The plugin loads contract.py in Scipion's Python, which need not have torch."""
    import subprocess
    import sys

    code = (
        "import sys, importlib.util as u; s = u.spec_from_file_location('c', %r); "
        "m = u.module_from_spec(s); sys.modules['c'] = m; s.loader.exec_module(m); "
        "bad = [n for n in sys.modules if n.split('.')[0] in "
        "('torch', 'pyworkflow', 'pwem', 'dual_engine', 'scipy', 'mrcfile')]; "
        "print(bad); sys.exit(1 if bad else 0)" % contract.__file__
    )
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tilt_range_rule_matches_the_geometry():
    """The closed-form rule (min <= -45, max >= 45) against a direct check of every
    direction: is some direction missing both in the tomogram and in its swapped copy?"""
    from dual_engine.wedge import _direction_angle, _distance_outside

    rad = np.radians(np.arange(-90.0, 90.0, 0.05))
    k_perp, k_z = np.cos(rad), -np.sin(rad)
    for tmin, tmax in itertools.product(range(-85, 0, 5), range(5, 90, 5)):
        missing = _distance_outside(_direction_angle(k_perp, k_z), tmin, tmax) > 1e-9
        swapped = _distance_outside(_direction_angle(k_z, k_perp), tmin, tmax) > 1e-9
        fillable = not np.any(missing & swapped)
        try:
            check_tilt_range((tmin, tmax))
            accepted = True
        except InputError:
            accepted = False
        assert accepted == fillable, (tmin, tmax)
    for bad in [(-40, 60), (-30, 60), (-60, 40), (60, -60), (-95, 60)]:
        with pytest.raises(InputError):
            check_tilt_range(bad)


def test_every_command_declares_help_and_checkable_defaults():
    for command, (text, classes) in COMMANDS.items():
        assert text
        for cls in classes:
            for field in dataclasses.fields(cls):
                assert field.metadata['help'], (command, field.name)
        # Only the required options are missing: a job of them alone is complete.
        required = {
            f.name for _, f in contract.command_fields(command) if f.metadata.get('required')
        }
        with pytest.raises(InputError, match='is required'):
            Job(command, {})
        assert required


def test_make_job_writes_only_given_values_and_checks_them():
    job = make_job('train', outdir='o', noisy=['a'], clean=['b'], iterations=5, seed=None)
    assert job == {'outdir': 'o', 'noisy': ['a'], 'clean': ['b'], 'iterations': 5}
    with pytest.raises(InputError, match='iterations must be >= 1'):
        make_job('train', outdir='o', noisy=['a'], clean=['b'], iterations=0)
    with pytest.raises(InputError, match='unknown option'):
        make_job('train', outdir='o', noisy=['a'], clean=['b'], learning_rate=1)


def test_model_settings_from_a_file_are_checked():
    good = DualConfig().to_dict()
    assert DualConfig.from_dict(good) == DualConfig()
    for change, message in [
        ({'unet_width': 0}, 'unet_width'),
        ({'lr': 'x'}, 'lr'),
        ({'betas': [0.9]}, 'betas'),
        ({'task': 'segment'}, 'task'),
        ({'nonsense': 1}, 'unknown DUAL settings'),
    ]:
        with pytest.raises(InputError, match=message):
            DualConfig.from_dict(dict(good, **change))


def test_streams_never_share_draws():
    """Training (rank x iteration), simulation (input x variant) and the weights: every
    key gives its own stream, including the pairs the old arithmetic seeds confused
    (seed*1000 + rank + iteration, seed + 1000*index, seed*100003 + variant)."""
    keys = (
        [('train', r, i) for r in range(3) for i in range(3)]
        + [('simulate', i, v) for i in range(3) for v in range(3)]
        + [('weights',)]
    )
    for seed in (0, 1, 1000):
        draws = {key: tuple(numpy_rng(seed, *key).integers(0, 2**62, 4)) for key in keys}
        assert len(set(draws.values())) == len(keys)
        torch_seeds = {torch_seed(seed, *key) for key in keys}
        assert len(torch_seeds) == len(keys)
    # Across seeds too: (seed 0, iteration 1000) is not (seed 1, iteration 0).
    assert torch_seed(0, 'train', 0, 1000) != torch_seed(1, 'train', 0, 0)
    # Deterministic: the same key, the same stream.
    assert torch_seed(3, 'simulate', 2, 1) == torch_seed(3, 'simulate', 2, 1)
    assert seed_sequence(3, 'train', 1, 2).spawn_key == (contract.STREAMS['train'], 1, 2)


def test_tile_rule_is_what_the_tile_loop_does():
    """The forms' tile-size rule (kept fraction, useful minimum) is computed from the
    same layout and receptive radius the network and the tile loop use."""
    from dual_engine.nets import UNet3D
    from dual_engine.streaming import tile_grid

    for depth, upsampling in itertools.product((1, 2, 3), contract.UNET_UPSAMPLINGS):
        net = UNet3D(width=2, depth=depth, upsampling=upsampling)
        assert net.receptive_radius == contract.unet_receptive_radius(depth, upsampling)
        for tile in (32, 64, 96, 160, 224):
            tiles, cores, _ = tile_grid((1000, 1000, 1000), tile, net.receptive_radius, 2**depth)
            kept = contract.tile_kept_fraction(tile, depth, upsampling)
            assert kept == pytest.approx((cores[0] / tiles[0]) ** 3)
            useful = contract.min_useful_tile(depth, upsampling)
            assert (kept >= contract.MIN_TILE_KEPT) == (tile >= useful)
            warning = contract.tile_warning(tile, depth, upsampling)
            assert (warning is None) == (tile >= useful)
    assert contract.min_useful_tile(2, "linear") == 112
    assert "use at least 112" in contract.tile_warning(64, 2, "linear")
    assert contract.min_useful_tile(2, "transposed") == 96


@pytest.mark.parametrize("upsampling", contract.UNET_UPSAMPLINGS)
@pytest.mark.parametrize("depth", [1, 2])  # 3 takes a minute
def test_receptive_radius_bounds_the_network(depth, upsampling):
    """No output voxel depends on an input voxel beyond the receptive radius (the tile
    loop drops that many at each face), for every alignment on the pooling grid."""
    import torch
    from dual_engine.nets import UNet3D, orthogonal_init

    torch.manual_seed(0)
    net = orthogonal_init(UNet3D(width=2, depth=depth, upsampling=upsampling)).double()
    radius, side = net.receptive_radius, 2 * net.receptive_radius + 2 * 2**depth + 8
    side += -side % 2**depth
    x = torch.zeros(1, 1, side, side, side, dtype=torch.double, requires_grad=True)
    out = net(x)
    centre = side // 2
    for shift in range(2**depth):  # every position on the pooling grid
        voxel = out[0, 0, centre, centre, centre + shift]
        (grad,) = torch.autograd.grad(voxel, x, retain_graph=True)
        reached = grad[0, 0].abs().sum(dim=(0, 1)).nonzero().ravel()
        assert reached.min() >= centre + shift - radius
        assert reached.max() <= centre + shift + radius


@pytest.mark.parametrize(
    "line", ["ribosome 1 2", "ribosome 1 2 x", "ribosome 1 2 nan", "ribosome 1 2 3 4 5"]
)
def test_particle_list_refuses_bad_lines(tmp_path, line):
    path = tmp_path / "particle_locations.txt"
    path.write_text("dimer 1 2 3 0 0 0\n" + line + "\n")
    with pytest.raises(InputError, match=":2: expected 'class x y z"):
        read_particle_locations(str(path))
