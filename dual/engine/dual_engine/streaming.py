"""Volumes that need not fit in memory, for inference (infer.py).

An MRC volume is opened as a memory map. Slab-wise passes (statistics, resampling) hand
its resident pages back to the system as they go (`release`); the overlap-tile loop
reads and writes its tiles row by row with pread/pwrite, so a process holds a few slabs
and one tile at a time, whatever the volume's size. Resampling between voxel sizes
gives io.rescale's result (scipy.ndimage.zoom, order 1, grid mode).
"""

import contextlib
import math
import mmap
import os

import mrcfile
import numpy as np
import torch
from scipy import ndimage

from dual_engine.contract import InputError, tile_layout
from dual_engine.io import atomic_output, check_extremes

SLAB_VOXELS = 1 << 22  # voxels per slab of the slab-wise passes (16 MB of float32)


# ----------------------------------------------------------------------------- files
def open_volume(path):
    """The data of an MRC file (checked by io.read_mrc first) as a read-only memmap."""
    with mrcfile.open(path, header_only=True, permissive=True) as mrc:
        header = mrc.header
        dtype = mrcfile.utils.data_dtype_from_header(header)
        shape = mrcfile.utils.data_shape_from_header(header)
        offset = header.nbytes + int(header.nsymbt)
    return np.memmap(path, dtype=dtype, mode='r', offset=offset, shape=shape)


@contextlib.contextmanager
def new_volume(path, shape, voxel_size):
    """Yield a float32 memmap of `shape` to fill; on success the MRC file appears at
    `path` (atomically) with `voxel_size` and the data's statistics in its header."""
    with atomic_output(path) as tmp:
        mrc = mrcfile.new_mmap(tmp, shape=tuple(shape), mrc_mode=2, overwrite=True)
        mrc.voxel_size = float(voxel_size)
        offset = mrc.header.nbytes + int(mrc.header.nsymbt)
        dtype = mrc.data.dtype
        mrc.close()
        data = np.memmap(tmp, dtype=dtype, mode='r+', offset=offset, shape=tuple(shape))
        yield data
        data.flush()
        stats = slab_statistics(data)
        del data
        with mrcfile.mmap(tmp, mode='r+') as mrc:
            h = mrc.header
            h.dmin, h.dmax, h.dmean, h.rms = stats['min'], stats['max'], stats['mean'], stats['std']


def release(array):
    """Hand the resident pages of a memmap back to the system (written pages are flushed
    first); a no-op for arrays in memory."""
    mapping = getattr(array, '_mmap', None)
    if mapping is None:
        base = getattr(array, 'base', None)
        mapping = getattr(base, '_mmap', None) if base is not None else None
    if mapping is None or not hasattr(mapping, 'madvise'):
        return
    if getattr(array, 'mode', 'r') != 'r':
        array.flush()
    mapping.madvise(mmap.MADV_DONTNEED)


# ----------------------------------------------------------------------------- slabs
def slabs(shape, voxels=SLAB_VOXELS):
    """(start, stop) along Z of slabs of about `voxels` voxels."""
    step = max(1, voxels // max(1, shape[1] * shape[2]))
    return [(a, min(a + step, shape[0])) for a in range(0, shape[0], step)]


def slab_statistics(volume):
    """{'min', 'max', 'mean', 'std'} of a volume, read slab by slab (float64 sums)."""
    count, total, low, high = 0, 0.0, math.inf, -math.inf
    for a, b in slabs(volume.shape):
        slab = np.asarray(volume[a:b], dtype=np.float64)
        count, total = count + slab.size, total + float(slab.sum())
        low, high = min(low, float(slab.min())), max(high, float(slab.max()))
        release(volume)
    mean, squares = total / count, 0.0
    for a, b in slabs(volume.shape):
        squares += float(((np.asarray(volume[a:b], dtype=np.float64) - mean) ** 2).sum())
        release(volume)
    return {'min': low, 'max': high, 'mean': mean, 'std': math.sqrt(squares / count)}


def checked_statistics(volume, name):
    """slab_statistics of a volume that io.check_finite would accept (finite, no
    corrupt extreme voxel), checked without loading it whole."""
    for a, b in slabs(volume.shape):
        if not np.all(np.isfinite(volume[a:b])):
            raise InputError('%s contains NaN or infinite values' % name)
        release(volume)
    stats = slab_statistics(volume)
    stride = max(1, round((volume.size / 1000000) ** (1 / 3)))
    check_extremes(
        np.asarray(volume[::stride, ::stride, ::stride]), stats['min'], stats['max'], name
    )
    release(volume)
    if stats['std'] == 0:
        raise InputError('%s is constant: it carries no signal' % name)
    return stats


def _linear_weights(n_in, n_out):
    """Source indices and weights of linear interpolation from n_in to n_out samples with
    scipy's grid mode (pixel edges aligned) and edge clamping ('nearest')."""
    coords = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    first = np.floor(coords).astype(np.int64)
    second = np.minimum(first + 1, n_in - 1)
    return first, second, (coords - first).astype(np.float32)


def _interpolate(data, axis, first, second, weight):
    shape = [1] * data.ndim
    shape[axis] = -1
    weight = weight.reshape(shape)
    return (
        np.take(data, first, axis=axis) * (1 - weight) + np.take(data, second, axis=axis) * weight
    )


def resample(source, target, factor=None, low_pass=True):
    """Fill `target` with `source` linearly resampled to target's shape (same field of
    view), slab by slab. With low_pass, downsampling by `factor` (default: from the
    shapes) low-passes first, as io.rescale does; without, as io.resize_to_shape."""
    factor = factor or target.shape[0] / source.shape[0]
    sigma = 0.5 / factor * 0.85 if factor < 1 and low_pass else 0.0
    halo = int(math.ceil(4 * sigma)) + 1 if sigma else 0  # gaussian_filter's 4-sigma support
    (z1, z2, wz), (y1, y2, wy), (x1, x2, wx) = (
        _linear_weights(n, m) for n, m in zip(source.shape, target.shape)
    )
    for a, b in slabs(target.shape):
        lo, hi = max(0, int(z1[a]) - halo), min(source.shape[0], int(z2[b - 1]) + 1 + halo)
        slab = np.asarray(source[lo:hi], dtype=np.float32)
        if sigma:
            # Exact at the volume's faces (the slab reaches them) and inside (the halo).
            slab = ndimage.gaussian_filter(slab, sigma)
        slab = _interpolate(slab, 0, z1[a:b] - lo, z2[a:b] - lo, wz[a:b])
        slab = _interpolate(slab, 1, y1, y2, wy)
        target[a:b] = _interpolate(slab, 2, x1, x2, wx)
        release(source)
        release(target)


def resampled_shape(shape, factor):
    """The shape io.rescale (scipy.ndimage.zoom) gives a volume resampled by `factor`."""
    return tuple(int(round(n * factor)) for n in shape)


# ----------------------------------------------------------------------------- tiles
def reflect_indices(start, stop, n):
    """Indices start..stop-1 of an axis of length n, mirrored at its ends as numpy's
    'reflect' padding does (any number of times)."""
    index = np.arange(start, stop)
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.abs(index) % period
    return np.where(index >= n, period - index, index)


def tile_grid(shape, tile, overlap, multiple):
    """(tile sizes, core sizes, overlap) along each axis: tiles of `tile` voxels rounded
    up to `multiple` (the network's size step), or less along an axis the volume fills
    with less (a thin tomogram gets flat tiles, not cubes mostly made of padding)."""
    # The overlap rounded to the pooling grid; tiles grown where the overlap would leave
    # too small a core (deep networks): the contract's rule, which the forms use too.
    tile, overlap = tile_layout(tile, overlap, multiple)

    def round_up(n):
        return int(np.ceil(n / multiple) * multiple)

    tiles = [min(tile, round_up(n + 2 * overlap)) for n in shape]
    return tiles, [t - 2 * overlap for t in tiles], overlap


def _read_block(source, index):
    """source[np.ix_(*index)] as float32. A memmap is read row by row with pread: a
    mapping would make every 4 KB page a tile's row touches resident (a tile of a
    volume 1024 voxels wide holds one row per page), so the cost would grow with the
    volume's width, not the tile's."""
    iz, iy, ix = index
    if not isinstance(source, np.memmap):
        return np.asarray(source[np.ix_(iz, iy, ix)], dtype=np.float32)
    lo, hi = int(ix.min()), int(ix.max()) + 1
    row = np.empty(hi - lo, dtype=source.dtype)
    block = np.empty((len(iz), len(iy), len(ix)), dtype=np.float32)
    item, ny, nx = source.dtype.itemsize, source.shape[1], source.shape[2]
    with open(source.filename, 'rb', buffering=0) as f:
        fd = f.fileno()
        for a, z in enumerate(iz):
            for b, y in enumerate(iy):
                os.preadv(fd, [row], source.offset + ((int(z) * ny + int(y)) * nx + lo) * item)
                block[a, b] = row[ix - lo]
    return block


def _write_block(target, corner, block):
    """target[z:, y:, x:] = block; a memmap is written row by row with pwrite (see
    _read_block)."""
    z, y, x = corner
    if not isinstance(target, np.memmap):
        target[z : z + block.shape[0], y : y + block.shape[1], x : x + block.shape[2]] = block
        return
    block = np.ascontiguousarray(block, dtype=target.dtype)
    item, ny, nx = target.dtype.itemsize, target.shape[1], target.shape[2]
    with open(target.filename, 'r+b', buffering=0) as f:
        fd = f.fileno()
        for a in range(block.shape[0]):
            for b in range(block.shape[1]):
                offset = target.offset + (((z + a) * ny + y + b) * nx + x) * item
                os.pwritev(fd, [block[a, b]], offset)


def run_tiles(source, target, network, tile, overlap, multiple, device='cpu', prepare=None):
    """Run `network` over `source` in overlapping tiles and write each tile's centre
    into `target` (same shape). prepare(block, (iz, iy, ix)) turns a float32 block,
    read at those source indices (mirrored beyond the faces), into the network's input.
    With overlap >= the network's receptive radius the result equals one pass over the
    whole (mirror-padded) volume."""
    shape = source.shape
    tiles, cores, overlap = tile_grid(shape, tile, overlap, multiple)
    with torch.no_grad():
        for z in range(0, shape[0], cores[0]):
            for y in range(0, shape[1], cores[1]):
                for x in range(0, shape[2], cores[2]):
                    index = [
                        reflect_indices(s - overlap, s - overlap + t, n)
                        for s, t, n in zip((z, y, x), tiles, shape)
                    ]
                    block = _read_block(source, index)
                    if prepare is not None:
                        block = prepare(block, index)
                    tensor = torch.from_numpy(np.ascontiguousarray(block))[None, None]
                    result = network(tensor.to(device))[0, 0].cpu().numpy()
                    size = [min(c, n - s) for n, s, c in zip(shape, (z, y, x), cores)]
                    _write_block(
                        target,
                        (z, y, x),
                        result[
                            overlap : overlap + size[0],
                            overlap : overlap + size[1],
                            overlap : overlap + size[2],
                        ],
                    )


def voxel_hash(index, key):
    """A 64-bit hash of each voxel's linear index (splitmix64 of index ^ key): random
    draws that depend on the voxel only, not on the tile that reads it."""
    x = np.asarray(index, dtype=np.uint64) ^ np.uint64(key)
    with np.errstate(over='ignore'):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def temporary_volume(folder, name, shape):
    """A float32 scratch memmap on disk in `folder` (removed when garbage collected
    with its folder; see infer.py's TemporaryDirectory)."""
    return np.memmap(os.path.join(folder, name), dtype=np.float32, mode='w+', shape=tuple(shape))
