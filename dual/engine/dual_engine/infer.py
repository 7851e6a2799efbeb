"""Inference with a trained model on whole volumes: denoising (Dn), simulation (Gs, Gn)
and missing-wedge compensation (Dn of a wedge model, combined in Fourier space by
wedge.combine), by the overlap-tile strategy.

All three bring the input to the model's working voxel size, standardise it, run the
network tile by tile, and resample the result back onto the input's grid and voxel
size, so that coordinates and overlays line up with the input. Denoising and simulation
stream the volume (streaming.py): their memory is bounded by the tile and a few slabs,
whatever the volume's size, with scratch files for resampling next to the output.
Compensation combines whole-volume Fourier transforms, so it holds the volume.
"""

import contextlib
import os
import sys
import tempfile

import numpy as np
import torch

from dual_engine import spectral
from dual_engine.contract import (
    DEFAULT_NOISE_MODEL,
    DEFAULT_TILE,
    FLIP_AVERAGE_COUNT,
    NOISE_MODELS,
    InputError,
    WedgeFlipOptions,
    check_outputs,
    check_tilt_range,
    check_voxel_size_ratio,
    output_name,
    simulated_name,
    tile_warning,
    unet_upsampling,
    torch_seed,
)
from dual_engine.cpus import default_threads
from dual_engine.data import load_for_model, wedge_preserving_flips
from dual_engine.io import read_mrc, resize_to_shape, write_mrc
from dual_engine.labels import check_labels, label_outputs, map_labels, write_labels
from dual_engine.streaming import (
    checked_statistics,
    new_volume,
    open_volume,
    resample,
    resampled_shape,
    run_tiles,
    slab_statistics,
    temporary_volume,
    voxel_hash,
)
from dual_engine.model import load_generators, resolve_device
from dual_engine.wedge import TRANSITION_DEGREES, combine


def apply_tiled(volume, network, tile=DEFAULT_TILE, overlap=None, multiple=4, device='cpu'):
    """`network` over an in-memory volume by overlapping tiles (streaming.run_tiles):
    tiles of `tile` voxels (or flat ones for thin volumes), `overlap` voxels dropped at
    each border (default: the receptive radius, so tiling equals one pass over the whole
    volume); mirror padding, so volumes smaller than one tile work too."""
    if overlap is None:
        overlap = getattr(network, 'receptive_radius', 16)
    volume = np.asarray(volume, dtype=np.float32)
    out = np.empty(volume.shape, dtype=np.float32)
    run_tiles(volume, out, network, tile, overlap, multiple, device)
    return out


class FlipAveraged(torch.nn.Module):
    """`network` averaged over the flips of its input that keep the missing wedge
    (data.wedge_preserving_flips: the ones training augments with), each output
    flipped back. The network is not exactly flip-equivariant, so the average has less
    of the variance that depends on orientation (noise mapped differently by each
    flip); it costs FLIP_AVERAGE_COUNT passes."""

    def __init__(self, network, tilt_axis):
        super().__init__()
        self.network = network
        along, across = wedge_preserving_flips(tilt_axis)
        # Array axes of a (Z, Y, X) volume are tensor dims 2..4 of (N, C, Z, Y, X).
        groups = [(), along, across, along + across]
        self.flips = [tuple(axis + 2 for axis in group) for group in groups]
        assert len(self.flips) == FLIP_AVERAGE_COUNT
        self.receptive_radius = network.receptive_radius
        self.multiple = network.multiple

    def forward(self, x):
        total = None
        for dims in self.flips:
            y = self.network(torch.flip(x, dims)) if dims else self.network(x)
            y = torch.flip(y, dims) if dims else y
            total = y if total is None else total + y
        return total / len(self.flips)


def _inference_network(network, cfg, flip_average):
    """The network inference runs: as trained, or averaged over the wedge's flips."""
    return FlipAveraged(network, cfg.tilt_axis) if flip_average else network


def load_network(model_path, device, threads):
    """(config, generators in eval mode, resolved device) of a model file."""
    torch.set_num_threads(threads or default_threads())
    device = resolve_device(device)
    cfg, generators = load_generators(model_path, device)
    return cfg, generators, device


def require_task(cfg, model_path, task):
    """A clear error when a model trained for one task is used for another."""
    if cfg.task != task:
        command = {'denoise': 'train', 'wedge': 'wedge-train'}[task]
        raise InputError(
            '%s was trained for the %r task, not for %r (train such a model '
            'with `dual-engine %s`)' % (model_path, cfg.task, task, command)
        )


def _check_inputs(cfg, inputs, voxel_size=None):
    """Every input readable, 3-D, real, finite, not constant and at a voxel size the
    model can work at, before any work is done (read slab by slab)."""
    for path in inputs:
        header_voxel_size = read_mrc(path)[1]
        size = voxel_size or header_voxel_size
        if not size or size <= 0:
            raise InputError('%s has no voxel size in its header; give it with --voxel-size' % path)
        check_voxel_size_ratio(size, cfg.voxel_size, path)
        checked_statistics(open_volume(path), path)


def _load_checked(model_path, task, device, threads, inputs, voxel_size):
    """(config, generators, device) of a model checked for `task` and `inputs`."""
    cfg, generators, device = load_network(model_path, device, threads)
    require_task(cfg, model_path, task)
    _check_inputs(cfg, inputs, voxel_size)
    return cfg, generators, device


def _prepare(job, task, outputs, network='denoiser'):
    """Load the model, check every input and output of `job` before any work; returns
    (config, generators, device). network: the U-Net the job runs (NETWORKS)."""
    loaded = _load_checked(job.model, task, job.device, job.threads, job.inputs, job.voxel_size)
    check_outputs(outputs, job.overwrite)
    cfg = loaded[0]
    upsampling = unet_upsampling(cfg.upsampling, network)
    warning = tile_warning(job.tile, cfg.unet_depth, upsampling, job.overlap)
    if warning:
        print('dual-engine: warning: %s.' % warning, file=sys.stderr, flush=True)
    return loaded


def denoise_files(job):
    """`denoise` command: yields one result dict per input."""
    outputs = [(p, os.path.join(job.outdir, output_name(p, job.suffix))) for p in job.inputs]
    cfg, generators, device = _prepare(job, 'denoise', outputs)
    for path, output in outputs:
        yield _denoise(
            cfg,
            generators,
            path,
            output,
            job.tile,
            job.overlap,
            device,
            job.voxel_size,
            job.flip_average,
        )


def denoise(
    model_path,
    input_path,
    output_path,
    tile=DEFAULT_TILE,
    overlap=None,
    device='cpu',
    threads=None,
    voxel_size=None,
    flip_average=False,
):
    """Denoise one tomogram with the model's Dn; writes output_path on the input's grid.
    flip_average: average Dn over the wedge-preserving flips (FlipAveraged)."""
    cfg, generators, device = _load_checked(
        model_path, 'denoise', device, threads, [input_path], voxel_size
    )
    return _denoise(
        cfg, generators, input_path, output_path, tile, overlap, device, voxel_size, flip_average
    )


def _denoise(
    cfg, generators, input_path, output_path, tile, overlap, device, voxel_size, flip_average
):
    def standardise(block, index):
        return (block - stats['mean']) / stats['std']

    with _streamed(cfg, input_path, output_path, voxel_size) as (working, result, stats, size):
        network = _inference_network(generators.denoiser, cfg, flip_average)
        run_tiles(
            working,
            result,
            network,
            tile,
            _overlap(network, overlap),
            network.multiple,
            device,
            standardise,
        )
    return {
        'input': input_path,
        'output': output_path,
        'voxel_size': size,
        'working_voxel_size': cfg.voxel_size,
        'shape': list(open_volume(input_path).shape),
        'flip_average': bool(flip_average),
    }


def _overlap(network, overlap):
    return network.receptive_radius if overlap is None else overlap


@contextlib.contextmanager
def _streamed(cfg, input_path, output_path, voxel_size):
    """Yield (working volume, result volume, working statistics, input voxel size) for one
    streamed pass: the input at the model's voxel size (a scratch file when it must be
    resampled, else the input itself) and where to write the network's output at that
    voxel size; the result is written to output_path on the input's grid."""
    source = open_volume(input_path)
    size = voxel_size or read_mrc(input_path)[1]
    factor = size / cfg.voxel_size
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix='.dual-scratch-') as scratch, new_volume(
        output_path, source.shape, size
    ) as out:
        if abs(factor - 1.0) < 1e-6:
            working, result = source, out
        else:
            shape = resampled_shape(source.shape, factor)
            working = temporary_volume(scratch, 'working', shape)
            resample(source, working, factor)
            result = temporary_volume(scratch, 'result', shape)
        yield working, result, slab_statistics(working), size
        if result is not out:
            resample(result, out, low_pass=False)  # as io.resize_to_shape
        del working, result


def denoise_on_input_grid(
    cfg,
    generators,
    input_path,
    tile=DEFAULT_TILE,
    overlap=None,
    device='cpu',
    voxel_size=None,
    flip_average=False,
):
    """Dn applied to one volume file, returned on the file's grid (standardised scale),
    with the voxel size the file was read at."""
    volume, input_voxel_size, shape = load_for_model(input_path, cfg.voxel_size, voxel_size)
    network = _inference_network(generators.denoiser, cfg, flip_average)
    output = apply_tiled(volume, network, tile, overlap, network.multiple, device)
    return resize_to_shape(output, shape), input_voxel_size


def simulate_files(job):
    """`simulate` command: yields one result dict per input map. Map i of the call is
    map first_index + i of the run, and each (map, variant) draws its own stream."""
    outputs = [
        (p, os.path.join(job.outdir, simulated_name(p, v)))
        for p in job.inputs
        for v in range(job.variants)
    ]
    labels = _checked_labels(job.inputs)
    for path, output in list(outputs):
        outputs += label_outputs(labels[path], [output])
    cfg, generators, device = _prepare(job, 'denoise', outputs, 'simulator')
    require_noise_model(generators, job.model, job.noise_model)
    for index, path in enumerate(job.inputs, job.first_index):
        yield _simulate(
            cfg,
            generators,
            path,
            job.outdir,
            job.variants,
            job.seed,
            index,
            job.tile,
            job.overlap,
            device,
            job.voxel_size,
            job.noise_model,
        )


def require_noise_model(generators, model_path, noise_model):
    """A clear error, before any work, for a noise model the model file cannot give."""
    if noise_model not in NOISE_MODELS:
        raise InputError(
            'unknown noise model %r (choose from %s)' % (noise_model, ', '.join(NOISE_MODELS))
        )
    if noise_model == 'fitted' and generators.spectra is None:
        raise InputError(
            "%s has no fitted noise model of this version (a checkpoint or a snapshot, "
            "or trained before it existed or by an earlier version): simulate with the "
            "noise model 'learned', or fit it: `dual-engine train --resume` in the "
            "model's training folder" % model_path
        )


def simulate(
    model_path,
    input_path,
    outdir,
    variants=1,
    seed=0,
    tile=DEFAULT_TILE,
    overlap=None,
    device='cpu',
    threads=None,
    voxel_size=None,
    index=0,
    noise_model=DEFAULT_NOISE_MODEL,
):
    """Synthetic tomograms from one clean density map, `variants` seeded draws on the
    map's grid and voxel size: with noise_model 'learned' t_f = Gs(v + P(Gn(z))), with
    'fitted' the fitted noise model (spectral.py). index: the map's place among the
    maps of a run (its own random streams)."""
    if variants < 1:
        raise InputError('variants must be at least 1')
    _checked_labels([input_path])
    cfg, generators, device = _load_checked(
        model_path, 'denoise', device, threads, [input_path], voxel_size
    )
    require_noise_model(generators, model_path, noise_model)
    return _simulate(
        cfg,
        generators,
        input_path,
        outdir,
        variants,
        seed,
        index,
        tile,
        overlap,
        device,
        voxel_size,
        noise_model,
    )


def _checked_labels(inputs):
    """{map: its labels} (labels.map_labels), each checked against its map."""
    found = {path: map_labels(path) for path in inputs}
    for path, labels in found.items():
        check_labels(path, labels)
    return found


def _simulate(
    cfg,
    generators,
    input_path,
    outdir,
    variants,
    seed,
    index,
    tile,
    overlap,
    device,
    voxel_size,
    noise_model=DEFAULT_NOISE_MODEL,
):
    network = generators.structural_generator
    labels = map_labels(input_path)
    outputs, written = [], []
    for variant in range(variants):
        path = os.path.join(outdir, simulated_name(input_path, variant))
        key = torch_seed(seed, 'simulate', index, variant)
        with _streamed(cfg, input_path, path, voxel_size) as (working, result, stats, size):
            if noise_model == 'fitted':
                volume = (np.asarray(working, dtype=np.float32) - stats['mean']) / stats['std']
                result[...] = spectral.synthesize(volume, generators.spectra, key, cfg.tilt_axis)
            else:
                noisy = _noise_adder(generators, key, working.shape, stats, device)
                run_tiles(
                    working,
                    result,
                    network,
                    tile,
                    _overlap(network, overlap),
                    network.multiple,
                    device,
                    noisy,
                )
        outputs.append(path)
        written.append(write_labels(labels, path, size))
    return {
        'input': input_path,
        'outputs': outputs,
        'labels': written,
        'voxel_size': size,
        'seed': seed,
        'index': index,
    }


UNIT_STATS = {'mean': 0.0, 'std': 1.0}  # of volumes standardised already


def fit_noise_model(generators, real_volumes, maps, cfg, device, seed, halves=None):
    """The spectra of the fitted noise model (spectral.py) of trained generators, from
    standardised real tomograms and clean maps (in memory, at the working voxel size):
    the learned simulator is run over the maps the fit uses (spectral.fit_maps).
    halves: the real tomograms' even/odd halves (pairs), if any (spectral.fit)."""
    network = generators.structural_generator
    maps = spectral.fit_maps(maps)
    simulated = []
    for number, v in enumerate(maps):
        out = np.empty(v.shape, dtype=np.float32)
        noisy = _noise_adder(
            generators, torch_seed(seed, 'fit-noise', number), v.shape, UNIT_STATS, device
        )
        run_tiles(
            v, out, network, DEFAULT_TILE, network.receptive_radius, network.multiple, device, noisy
        )
        simulated.append(out)
    return spectral.fit(real_volumes, maps, simulated, cfg.tilt_axis, halves)


def _noise_adder(generators, key, shape, stats, device):
    """prepare() for run_tiles: the standardised map plus P(Gn(z)), Gn's voxel values for
    one code z drawn at random for each voxel (the noise is voxel-independent by
    design). The draw depends on the voxel only (streaming.voxel_hash), so tiles agree
    where they overlap and the result does not depend on the tiling."""
    rng = torch.Generator().manual_seed(key)
    with torch.no_grad():
        z = torch.randn(1, generators.code_size, generator=rng).to(device)
        pool = generators.noise_decoder(z).flatten().cpu().numpy()
    ny, nx = shape[1], shape[2]

    def prepare(block, index):
        iz, iy, ix = (np.asarray(i, dtype=np.uint64) for i in index)
        linear = (iz[:, None, None] * np.uint64(ny) + iy[None, :, None]) * np.uint64(nx) + ix
        noise = pool[voxel_hash(linear, key) % np.uint64(pool.size)]
        return (block - stats['mean']) / stats['std'] + noise

    return prepare


def compensate_files(job):
    """`wedge` command: yields one result dict per input tomogram."""
    outputs = [(p, os.path.join(job.outdir, output_name(p, job.suffix))) for p in job.inputs]
    cfg, generators, device = _prepare(job, 'wedge', outputs)
    for path, output in outputs:
        yield _compensate(
            cfg,
            generators,
            path,
            output,
            job.tilt_range,
            job.tilt_axis,
            job.transition,
            job.tile,
            job.overlap,
            device,
            job.voxel_size,
            job.flip_average,
        )


def compensate(
    model_path,
    input_path,
    output_path,
    tilt_range=None,
    tilt_axis=None,
    transition=TRANSITION_DEGREES,
    tile=DEFAULT_TILE,
    overlap=None,
    device='cpu',
    threads=None,
    voxel_size=None,
    flip_average=WedgeFlipOptions.flip_average,
):
    """Fill the missing wedge of one tomogram with a wedge model's translation.

    tilt_range: the tomogram's, in degrees; None takes the model's training range.
    tilt_axis: None takes the model's. The output (written atomically) has the input's
    grid, voxel size and intensity scale; outside the missing cone its Fourier
    coefficients are the input's. flip_average: average the translation over the
    wedge-preserving flips (FlipAveraged).
    """
    cfg, generators, device = _load_checked(
        model_path, 'wedge', device, threads, [input_path], voxel_size
    )
    return _compensate(
        cfg,
        generators,
        input_path,
        output_path,
        tilt_range,
        tilt_axis,
        transition,
        tile,
        overlap,
        device,
        voxel_size,
        flip_average,
    )


def _compensate(
    cfg,
    generators,
    input_path,
    output_path,
    tilt_range,
    tilt_axis,
    transition,
    tile,
    overlap,
    device,
    voxel_size,
    flip_average,
):
    tilt_axis = tilt_axis or cfg.tilt_axis
    tilt_range = check_tilt_range(tilt_range if tilt_range is not None else cfg.tilt_range)
    data = np.array(read_mrc(input_path)[0], dtype=np.float32)
    mean, std = float(data.mean()), float(data.std())
    if not np.isfinite(std) or std == 0:
        raise InputError('%s is constant or not finite' % input_path)
    translated, input_voxel_size = denoise_on_input_grid(
        cfg, generators, input_path, tile, overlap, device, voxel_size, flip_average
    )
    result, gain = combine(
        (data - mean) / std, translated, tilt_range, tilt_axis, transition, match_gain=True
    )
    write_mrc(output_path, result * std + mean, input_voxel_size)
    return {
        'input': input_path,
        'output': output_path,
        'voxel_size': input_voxel_size,
        'tilt_range': list(tilt_range),
        'tilt_axis': tilt_axis,
        'transition_degrees': transition,
        'translation_gain': gain,
        'flip_average': bool(flip_average),
    }
