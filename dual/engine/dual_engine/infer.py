"""Inference with a trained model on whole volumes: denoising (Dn) and simulation
(Gs, Gn), by the overlap-tile strategy so memory stays bounded whatever the size.

Both bring the input to the model's working voxel size, standardise it, run the
network tile by tile, and resample the result back onto the input's grid and voxel
size, so that coordinates and overlays line up with the input.
"""
import os

import numpy as np
import torch

from dual_engine.data import load_for_model
from dual_engine.io import InputError, resize_to_shape, write_mrc
from dual_engine.model import load_generators, resolve_device

# Default tile side: 160^3 tiles (U-Net width 16) waste less on overlap than smaller
# ones; a 200x512x512 tomogram peaks at 2.7 GB in all (bench/run_speed.py).
DEFAULT_TILE = 160


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
    overlap = int(np.ceil(overlap / multiple) * multiple)   # keeps the pooling grid

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
                    block = padded[z:z + tz, y:y + ty, x:x + tx]
                    result = network(torch.from_numpy(np.ascontiguousarray(block))
                                     [None, None].to(device))[0, 0].cpu().numpy()
                    size = [min(c, n - s) for n, s, c in zip(shape, (z, y, x), cores)]
                    out[z:z + size[0], y:y + size[1], x:x + size[2]] = \
                        result[overlap:overlap + size[0], overlap:overlap + size[1],
                               overlap:overlap + size[2]]
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
        raise InputError('%s was trained for the %r task, not for %r (train such a model '
                         'with `dual-engine %s`)' % (model_path, cfg.task, task, command))


def denoise(model_path, input_path, output_path, tile=DEFAULT_TILE, overlap=None, device='cpu',
            threads=None, voxel_size=None):
    """Denoise one tomogram with the model's Dn; writes output_path on the input's grid."""
    cfg, generators, device = load_network(model_path, device, threads)
    require_task(cfg, model_path, 'denoise')
    clean, input_voxel_size = denoise_on_input_grid(cfg, generators, input_path, tile,
                                                    overlap, device, voxel_size)
    shape = clean.shape
    write_mrc(output_path, clean, input_voxel_size)
    return {'input': input_path, 'output': output_path, 'voxel_size': input_voxel_size,
            'working_voxel_size': cfg.voxel_size, 'shape': list(shape)}


def denoise_on_input_grid(cfg, generators, input_path, tile=DEFAULT_TILE, overlap=None, device='cpu',
                          voxel_size=None):
    """Dn applied to one volume file, returned on the file's grid (standardised scale),
    with the voxel size the file was read at."""
    volume, input_voxel_size, shape = load_for_model(input_path, cfg.voxel_size, voxel_size)
    output = apply_tiled(volume, generators.denoiser, tile, overlap,
                         generators.denoiser.multiple, device)
    return resize_to_shape(output, shape), input_voxel_size


def simulate(model_path, input_path, outdir, variants=1, seed=0, tile=DEFAULT_TILE, overlap=None,
             device='cpu', threads=None, voxel_size=None):
    """Synthetic tomograms from one clean density map: `variants` seeded draws of the
    noise code z, each t_f = Gs(v + P(Gn(z))) on the map's grid and voxel size."""
    if variants < 1:
        raise InputError('variants must be at least 1')
    cfg, generators, device = load_network(model_path, device, threads)
    require_task(cfg, model_path, 'denoise')
    volume, input_voxel_size, shape = load_for_model(input_path, cfg.voxel_size, voxel_size)
    name = os.path.splitext(os.path.basename(input_path))[0]
    outputs = []
    for variant in range(variants):
        rng = torch.Generator().manual_seed(seed * 100003 + variant)
        noise = nonstructural_noise(generators, volume.shape, rng, device)
        synthetic = apply_tiled(volume + noise, generators.structural_generator, tile,
                                overlap, generators.structural_generator.multiple, device)
        path = os.path.join(outdir, '%s_sim%02d.mrc' % (name, variant))
        write_mrc(path, resize_to_shape(synthetic, shape), input_voxel_size)
        outputs.append(path)
    return {'input': input_path, 'outputs': outputs, 'voxel_size': input_voxel_size,
            'seed': seed}


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
