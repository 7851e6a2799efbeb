"""Volume and table I/O: MRC in and out, voxel-size rescaling, standardising,
SHREC particle lists and picked-coordinate tables.

Conventions used everywhere in the engine:
- arrays are indexed [z, y, x]; coordinates are (x, y, z) in voxels, origin at the
  centre of voxel (0, 0, 0), as in SHREC 2021's particle_locations.txt;
- voxel sizes are in Angstrom.
Every writer goes through `atomic_output`, so an interrupted run never leaves a
half-written file under the final name.
"""

import contextlib
import os

import mrcfile
import numpy as np

from dual_engine.contract import (  # noqa: F401 (re-exported)
    InputError,
    Particle,
    read_particle_locations,
    read_picks_table,
)


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to `path`; move it into place only on success.
    Temporary files left by killed writers of the same path are removed first."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    prefix = ".%s." % os.path.basename(path)
    _remove_stale_temporaries(directory, prefix)
    tmp = os.path.join(directory, "%s%d.tmp" % (prefix, os.getpid()))
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove_stale_temporaries(directory, prefix):
    """Remove <prefix><pid>.tmp files whose writer process no longer exists."""
    for name in os.listdir(directory):
        pid = name[len(prefix) : -len(".tmp")]
        if not (name.startswith(prefix) and name.endswith(".tmp") and pid.isdigit()):
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.remove(os.path.join(directory, name))
        except PermissionError:  # alive, someone else's
            pass


def read_mrc(path, mmap=True):
    """Return (data, voxel_size). With mmap the data is a read-only memory map.

    Refused with a message: files that are not MRC, not 3-D, complex-valued (the
    imaginary part would be lost), or whose voxels are not cubic (the engine works on
    isotropic grids; resample first)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError("MRC file not found: %s" % path)
    try:
        if mmap:
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
            data, size = mrc.data, mrc.voxel_size
        else:
            with mrcfile.open(path, mode="r", permissive=True) as mrc:
                data, size = np.array(mrc.data), mrc.voxel_size
    except (ValueError, OSError, EOFError) as err:
        raise InputError("cannot read %s as MRC: %s" % (path, err)) from err
    if data is None or data.ndim != 3:
        raise InputError(
            "%s is not a 3-D volume (shape %s)" % (path, None if data is None else data.shape)
        )
    if np.iscomplexobj(data):
        raise InputError("%s holds complex values; the engine reads real volumes only" % path)
    return data, _isotropic_voxel_size(path, size)


def _isotropic_voxel_size(path, size):
    sizes = [float(size.x), float(size.y), float(size.z)]
    if max(sizes) > 0 and (max(sizes) - min(sizes)) > 1e-3 * max(sizes):
        raise InputError(
            "%s has non-cubic voxels (%g x %g x %g A): resample it to an "
            "isotropic grid first" % (path, *sizes)
        )
    return sizes[0]


def write_mrc(path, data, voxel_size):
    """Write a float32 (or integer label) volume with `voxel_size` in the header."""
    data = np.asarray(data)
    if data.dtype not in (np.int8, np.int16, np.uint8, np.uint16, np.float32):
        data = data.astype(np.float32)
    with atomic_output(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(np.ascontiguousarray(data))
            mrc.voxel_size = float(voxel_size)
            mrc.update_header_stats()


def rescale(volume, voxel_size, target_voxel_size):
    """Resample `volume` from `voxel_size` to `target_voxel_size` (same field of view;
    linear, low-passed first when downsampling): streaming.resample on an array."""
    from dual_engine.streaming import resample, resampled_shape  # streaming imports io

    factor = float(voxel_size) / float(target_voxel_size)
    volume = np.asarray(volume, dtype=np.float32)
    if abs(factor - 1.0) < 1e-6:
        return volume.copy()
    out = np.empty(resampled_shape(volume.shape, factor), dtype=np.float32)
    resample(volume, out, factor)
    return out


def resize_to_shape(volume, shape):
    """Resample `volume` onto exactly `shape` (used to go back to an input's grid)."""
    from dual_engine.streaming import resample

    volume = np.asarray(volume, dtype=np.float32)
    if tuple(volume.shape) == tuple(shape):
        return volume
    out = np.empty(tuple(shape), dtype=np.float32)
    resample(volume, out, low_pass=False)
    return out


# A value this many times the spread of the central 99.8% of a volume away from its
# median is a corrupt voxel, not data: one such voxel would set the scale of the whole
# volume and flatten everything else.
OUTLIER_SPREADS = 1e4


def check_finite(volume, name="volume"):
    """Refuse NaN, infinite and absurdly extreme values (a corrupt voxel at 3e38, say)."""
    volume = np.asarray(volume)
    if not np.all(np.isfinite(volume)):
        raise InputError("%s contains NaN or infinite values" % name)
    sample = volume.ravel()[:: max(1, volume.size // 1000000)]
    check_extremes(sample, float(volume.min()), float(volume.max()), name)


def check_extremes(sample, low, high, name):
    """Refuse a volume whose extreme values (low, high) lie more than OUTLIER_SPREADS
    times the spread of the central 99.8% of `sample` (a subsample of it) from its median."""
    p_low, median, p_high = np.percentile(sample, [0.1, 50, 99.9])
    spread = float(p_high - p_low)
    worst = high if abs(high - median) >= abs(low - median) else low
    if spread > 0 and abs(worst - median) > OUTLIER_SPREADS * spread:
        raise InputError(
            "%s has extreme values (%.3g, while 99.8%% of it lies within %.3g of %.3g): "
            "a corrupt voxel? Clip or fix the volume first" % (name, worst, spread, median)
        )


def standardize(volume, name="volume"):
    """(v - mean) / std as float32; refuses NaNs and constant volumes."""
    volume = np.asarray(volume, dtype=np.float32)
    check_finite(volume, name)
    std = float(volume.std(dtype=np.float64))
    if std == 0:
        raise InputError("%s is constant: it carries no signal" % name)
    return (volume - float(volume.mean(dtype=np.float64))) / std


def write_particle_locations(path, particles):
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        for p in particles:
            f.write(
                "%s %d %d %d %.3f %.3f %.3f\n"
                % (p.name, round(p.x), round(p.y), round(p.z), p.rot_z1, p.rot_x, p.rot_z2)
            )


COORDINATE_COLUMNS = ("x", "y", "z", "score")


def write_coordinates(path, xyz, scores):
    """Picked positions (voxels of the picked tomogram) with one score each, tab separated."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    with atomic_output(path) as tmp, open(tmp, "w") as f:
        f.write("\t".join(COORDINATE_COLUMNS) + "\n")
        for (x, y, z), s in zip(xyz, scores):
            f.write("%.2f\t%.2f\t%.2f\t%.6g\n" % (x, y, z, s))


def read_coordinates(path):
    """Return (xyz [N,3], scores [N]) from a coordinate table or a SHREC particle list."""
    with open(path) as f:
        first = f.readline().split()
    if first[:3] == ["x", "y", "z"]:
        return read_picks_table(path)
    particles = read_particle_locations(path)
    xyz = np.array([p.xyz for p in particles]).reshape(-1, 3)
    return xyz, np.ones(len(xyz))
