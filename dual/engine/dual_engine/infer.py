"""Inference with a trained model on whole volumes: denoising (Dn), simulation (Gs, Gn)
and missing-wedge compensation (Dn of a wedge model, combined in Fourier space by
wedge.combine), by the overlap-tile strategy.

All three bring the input to the model's working voxel size, standardise it, run the
network tile by tile, and resample the result back onto the input's grid and voxel
size, so that coordinates and overlays line up with the input.
"""

import os

import numpy as np
import torch

from dual_engine.contract import (
    DEFAULT_TILE,
    InputError,
    check_outputs,
    check_tilt_range,
    check_voxel_size_ratio,
    output_name,
    simulated_name,
    torch_seed,
)
from dual_engine.data import load_for_model
from dual_engine.io import read_mrc, resize_to_shape, write_mrc
from dual_engine.model import load_generators, resolve_device
from dual_engine.wedge import TRANSITION_DEGREES, combine


def apply_tiled(volume, network, tile=DEFAULT_TILE, overlap=None, multiple=4, device='cpu'):
    """Run `network` over `volume` in overlapping tiles and keep each tile's centre.

    Tiles are `tile` voxels wide (rounded up to `multiple`, the network's size step),
    or less along an axis the volume fills with less (a thin tomogram gets flat tiles,
    not cubes mostly made of padding); `overlap` voxels on each side are discarded
    (default: the network's receptive radius, so tiling gives the same result as one
    pass over the whole volume). The volume is mirror-padded, so volumes smaller than
    one tile work too.
    """
    if overlap is None:
        overlap = getattr(network, 'receptive_radius', 16)
    overlap = int(np.ceil(overlap / multiple) * multiple)  # keeps the pooling grid

    def round_up(n):
        return int(np.ceil(n / multiple) * multiple)

    # Tiles grow when the overlap would leave too small a core (deep networks).
    tile = round_up(max(tile, 2 * overlap + 4 * multiple))
    shape = volume.shape
    tiles = [min(tile, round_up(n + 2 * overlap)) for n in shape]
    cores = [t - 2 * overlap for t in tiles]
    padded_shape = [int(np.ceil(n / c)) * c + 2 * overlap for n, c in zip(shape, cores)]
    pads = [(overlap, p - n - overlap) for n, p in zip(shape, padded_shape)]
    padded = np.pad(np.asarray(volume, dtype=np.float32), pads, mode='reflect')
    out = np.empty(shape, dtype=np.float32)
    (tz, ty, tx), (cz, cy, cx) = tiles, cores
    with torch.no_grad():
        for z in range(0, shape[0], cz):
            for y in range(0, shape[1], cy):
                for x in range(0, shape[2], cx):
                    block = padded[z : z + tz, y : y + ty, x : x + tx]
                    result = (
                        network(
                            torch.from_numpy(np.ascontiguousarray(block))[None, None].to(device)
                        )[0, 0]
                        .cpu()
                        .numpy()
                    )
                    size = [min(c, n - s) for n, s, c in zip(shape, (z, y, x), cores)]
                    out[z : z + size[0], y : y + size[1], x : x + size[2]] = result[
                        overlap : overlap + size[0],
                        overlap : overlap + size[1],
                        overlap : overlap + size[2],
                    ]
    return out


def load_network(model_path, device, threads):
    """(config, generators in eval mode, resolved device) of a model file."""
    if threads:
        torch.set_num_threads(threads)
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
    """Every input readable, 3-D, real, and at a voxel size the model can work at, before
    any work is done."""
    for path in inputs:
        header_voxel_size = read_mrc(path)[1]
        size = voxel_size or header_voxel_size
        if not size or size <= 0:
            raise InputError('%s has no voxel size in its header; give it with --voxel-size' % path)
        check_voxel_size_ratio(size, cfg.voxel_size, path)


def _load_checked(model_path, task, device, threads, inputs, voxel_size):
    """(config, generators, device) of a model checked for `task` and `inputs`."""
    cfg, generators, device = load_network(model_path, device, threads)
    require_task(cfg, model_path, task)
    _check_inputs(cfg, inputs, voxel_size)
    return cfg, generators, device


def _prepare(job, task, outputs):
    """Load the model, check every input and output of `job` before any work; returns
    (config, generators, device)."""
    loaded = _load_checked(job.model, task, job.device, job.threads, job.inputs, job.voxel_size)
    check_outputs(outputs, job.overwrite)
    return loaded


def denoise_files(job):
    """`denoise` command: yields one result dict per input."""
    outputs = [(p, os.path.join(job.outdir, output_name(p, job.suffix))) for p in job.inputs]
    cfg, generators, device = _prepare(job, 'denoise', outputs)
    for path, output in outputs:
        yield _denoise(cfg, generators, path, output, job.tile, job.overlap, device, job.voxel_size)


def denoise(
    model_path,
    input_path,
    output_path,
    tile=DEFAULT_TILE,
    overlap=None,
    device='cpu',
    threads=None,
    voxel_size=None,
):
    """Denoise one tomogram with the model's Dn; writes output_path on the input's grid."""
    cfg, generators, device = _load_checked(
        model_path, 'denoise', device, threads, [input_path], voxel_size
    )
    return _denoise(cfg, generators, input_path, output_path, tile, overlap, device, voxel_size)


def _denoise(cfg, generators, input_path, output_path, tile, overlap, device, voxel_size):
    clean, input_voxel_size = denoise_on_input_grid(
        cfg, generators, input_path, tile, overlap, device, voxel_size
    )
    write_mrc(output_path, clean, input_voxel_size)
    return {
        'input': input_path,
        'output': output_path,
        'voxel_size': input_voxel_size,
        'working_voxel_size': cfg.voxel_size,
        'shape': list(clean.shape),
    }


def denoise_on_input_grid(
    cfg, generators, input_path, tile=DEFAULT_TILE, overlap=None, device='cpu', voxel_size=None
):
    """Dn applied to one volume file, returned on the file's grid (standardised scale),
    with the voxel size the file was read at."""
    volume, input_voxel_size, shape = load_for_model(input_path, cfg.voxel_size, voxel_size)
    output = apply_tiled(
        volume, generators.denoiser, tile, overlap, generators.denoiser.multiple, device
    )
    return resize_to_shape(output, shape), input_voxel_size


def simulate_files(job):
    """`simulate` command: yields one result dict per input map. Map i of the call is
    map first_index + i of the run, and each (map, variant) draws its own stream."""
    outputs = [
        (p, os.path.join(job.outdir, simulated_name(p, v)))
        for p in job.inputs
        for v in range(job.variants)
    ]
    cfg, generators, device = _prepare(job, 'denoise', outputs)
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
):
    """Synthetic tomograms from one clean density map: `variants` seeded draws of the
    noise code z, each t_f = Gs(v + P(Gn(z))) on the map's grid and voxel size. index:
    the map's place among the maps of a run (its own random streams)."""
    if variants < 1:
        raise InputError('variants must be at least 1')
    cfg, generators, device = _load_checked(
        model_path, 'denoise', device, threads, [input_path], voxel_size
    )
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
    )


def _simulate(
    cfg, generators, input_path, outdir, variants, seed, index, tile, overlap, device, voxel_size
):
    volume, input_voxel_size, shape = load_for_model(input_path, cfg.voxel_size, voxel_size)
    outputs = []
    for variant in range(variants):
        rng = torch.Generator().manual_seed(torch_seed(seed, 'simulate', index, variant))
        noise = nonstructural_noise(generators, volume.shape, rng, device)
        synthetic = apply_tiled(
            volume + noise,
            generators.structural_generator,
            tile,
            overlap,
            generators.structural_generator.multiple,
            device,
        )
        path = os.path.join(outdir, simulated_name(input_path, variant))
        write_mrc(path, resize_to_shape(synthetic, shape), input_voxel_size)
        outputs.append(path)
    return {
        'input': input_path,
        'outputs': outputs,
        'voxel_size': input_voxel_size,
        'seed': seed,
        'index': index,
    }


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
):
    """Fill the missing wedge of one tomogram with a wedge model's translation.

    tilt_range: the tomogram's, in degrees; None takes the model's training range.
    tilt_axis: None takes the model's. The output (written atomically) has the input's
    grid, voxel size and intensity scale; outside the missing cone its Fourier
    coefficients are the input's.
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
):
    tilt_axis = tilt_axis or cfg.tilt_axis
    tilt_range = check_tilt_range(tilt_range if tilt_range is not None else cfg.tilt_range)
    data = np.array(read_mrc(input_path)[0], dtype=np.float32)
    mean, std = float(data.mean()), float(data.std())
    if not np.isfinite(std) or std == 0:
        raise InputError('%s is constant or not finite' % input_path)
    translated, input_voxel_size = denoise_on_input_grid(
        cfg, generators, input_path, tile, overlap, device, voxel_size
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
    }


def nonstructural_noise(generators, shape, rng, device='cpu'):
    """P(Gn(z)) for a whole volume: Gn's voxel values for one code z, repeated to fill
    the volume and randomly permuted (the noise is voxel-independent by design)."""
    with torch.no_grad():
        z = torch.randn(1, generators.code_size, generator=rng).to(device)
        values = generators.noise_decoder(z).flatten().cpu()
    count = int(np.prod(shape))
    pool = values.repeat(count // values.numel() + 1)[:count]
    order = torch.randperm(count, generator=rng)
    return pool[order].numpy().reshape(shape)
