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


def _tile_starts(length, tile, core):
    """Starts of tiles of size `tile` whose central `core` regions cover [0, length)."""
    margin = (tile - core) // 2
    starts = list(range(-margin, length - margin, core))
    return starts


def apply_tiled(volume, network, tile=96, overlap=None, multiple=4, device='cpu'):
    """Run `network` over `volume` in overlapping tiles and keep each tile's centre.

    Tiles are `tile` voxels wide (rounded up to `multiple`, the network's size step);
    `overlap` voxels on each side are discarded (default: the network's receptive
    radius, so tiling gives the same result as one pass over the whole volume).
    The volume is mirror-padded, so volumes smaller than one tile work too.
    """
    if overlap is None:
        overlap = getattr(network, 'receptive_radius', 16)
    overlap = int(np.ceil(overlap / multiple) * multiple)   # keeps the pooling grid
    # Tiles grow when the overlap would leave too small a core (deep networks).
    tile = int(np.ceil(max(tile, 2 * overlap + 4 * multiple) / multiple) * multiple)
    core = tile - 2 * overlap
    shape = volume.shape
    padded_shape = [len(_tile_starts(n, tile, core)) * core + 2 * overlap for n in shape]
    pads = [(overlap, p - n - overlap) for n, p in zip(shape, padded_shape)]
    padded = np.pad(np.asarray(volume, dtype=np.float32), pads, mode='reflect')
    out = np.empty(shape, dtype=np.float32)
    with torch.no_grad():
        for z in range(0, shape[0], core):
            for y in range(0, shape[1], core):
                for x in range(0, shape[2], core):
                    block = padded[z:z + tile, y:y + tile, x:x + tile]
                    result = network(torch.from_numpy(np.ascontiguousarray(block))
                                     [None, None].to(device))[0, 0].cpu().numpy()
                    size = [min(core, n - s) for n, s in zip(shape, (z, y, x))]
                    out[z:z + size[0], y:y + size[1], x:x + size[2]] = \
                        result[overlap:overlap + size[0], overlap:overlap + size[1],
                               overlap:overlap + size[2]]
    return out


def _prepare(model_path, device, threads):
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(device)
    cfg, generators = load_generators(model_path, device)
    return cfg, generators, device


def denoise(model_path, input_path, output_path, tile=96, overlap=None, device='cpu',
            threads=None, voxel_size=None):
    """Denoise one tomogram with the model's Dn; writes output_path on the input's grid."""
    cfg, generators, device = _prepare(model_path, device, threads)
    volume, input_voxel_size, shape = load_for_model(input_path, cfg.voxel_size, voxel_size)
    clean = apply_tiled(volume, generators.denoiser, tile, overlap,
                        generators.denoiser.multiple, device)
    write_mrc(output_path, resize_to_shape(clean, shape), input_voxel_size)
    return {'input': input_path, 'output': output_path, 'voxel_size': input_voxel_size,
            'working_voxel_size': cfg.voxel_size, 'shape': list(shape)}


def simulate(model_path, input_path, outdir, variants=1, seed=0, tile=96, overlap=None,
             device='cpu', threads=None, voxel_size=None):
    """Synthetic tomograms from one clean density map: `variants` seeded draws of the
    noise code z, each t_f = Gs(v + P(Gn(z))) on the map's grid and voxel size."""
    if variants < 1:
        raise InputError('variants must be at least 1')
    cfg, generators, device = _prepare(model_path, device, threads)
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
