"""Unpaired subvolume sampling from the noisy and the clean domain (paper, Methods:
every volume rescaled to the working voxel size and standardised; random subvolumes
drawn independently from each domain)."""

import os
import sys

import numpy as np
from scipy import ndimage, stats

from dual_engine.contract import MAX_VOXEL_SIZE_RATIO, InputError, check_fits_subvolume
from dual_engine.io import read_mrc, rescale, standardize


def load_for_model(path, working_voxel_size, voxel_size=None):
    """Read a volume, bring it to the working voxel size and standardise it.

    voxel_size overrides the MRC header (for headers that say 0 or 1 by mistake).
    Returns (volume, voxel size the file was read at, the file's shape).
    """
    data, header_voxel_size = read_mrc(path)
    voxel_size = voxel_size or header_voxel_size
    if not voxel_size or voxel_size <= 0:
        raise InputError("%s has no voxel size in its header; give it explicitly" % path)
    volume = rescale(data, voxel_size, working_voxel_size)
    return standardize(volume, name=os.path.basename(path)), voxel_size, data.shape


# Contrast estimate (DualConfig.noisy_contrast 'auto'): skewness of the volumes after a
# Gaussian low-pass of this many voxels; below MIN_CONTRAST_SKEW it is unclear. Dense
# matter (particles, membranes, gold) is rare and strong, so its sign shows in the skew.
CONTRAST_SIGMA = 2.0
MIN_CONTRAST_SKEW = 0.25


def low_pass_skewness(volumes):
    """Skewness of the volumes' voxels after a Gaussian low-pass (CONTRAST_SIGMA)."""
    values = np.concatenate([ndimage.gaussian_filter(v, CONTRAST_SIGMA).ravel() for v in volumes])
    return float(stats.skew(values))


def estimate_contrast(noisy, clean):
    """'same', 'inverted' or 'free' (unclear): the particle contrast of the noisy
    domain's volumes against the clean domain's, from the sign of their low-pass
    skewness. Returns (contrast, (noisy skewness, clean skewness))."""
    skews = low_pass_skewness(noisy.volumes), low_pass_skewness(clean.volumes)
    if min(abs(s) for s in skews) < MIN_CONTRAST_SKEW:
        return 'free', skews
    return ('same' if skews[0] * skews[1] > 0 else 'inverted'), skews


ARRAY_AXIS_OF_TILT_AXIS = {'x': 2, 'y': 1}  # tilt axis name -> array axis of a (Z, Y, X) volume


def wedge_preserving_flips(tilt_axis):
    """Groups of array axes that may be flipped together without changing the wedge.

    Mirroring along the tilt axis keeps every tilt direction; mirroring the beam axis
    and the other in-plane axis together is a 180-degree rotation about the tilt axis,
    which keeps them too. Either of those two alone mirrors the tilt angles, turning an
    asymmetric range such as -50..70 into -70..50.
    """
    if tilt_axis not in ARRAY_AXIS_OF_TILT_AXIS:
        raise InputError("tilt axis must be 'x' or 'y' (got %r)" % (tilt_axis,))
    along = ARRAY_AXIS_OF_TILT_AXIS[tilt_axis]
    return ((along,), (0, 3 - along))


def wedge_swap_axes(tilt_axis):
    """The array axes the wedge task swaps: the beam axis (Z) and the in-plane axis
    that is not the tilt axis. The swapped volume's missing cone lies where the
    original was measured, and vice versa (paper, Fig. 6)."""
    return (0, wedge_preserving_flips(tilt_axis)[1][1])


def _warn_far_voxel_size(path, voxel_size, working_voxel_size):
    """Training may resample by any factor (finer clean maps are legitimate), but a
    factor beyond MAX_VOXEL_SIZE_RATIO is often a wrong header: say so in the log."""
    ratio = max(voxel_size, working_voxel_size) / min(voxel_size, working_voxel_size)
    if ratio > MAX_VOXEL_SIZE_RATIO:
        print(
            'Warning: %s is at %.3g A/voxel, %.1fx from the working voxel size of %.3g A; '
            'if its header is wrong, give the voxel size explicitly'
            % (path, voxel_size, ratio, working_voxel_size),
            file=sys.stderr,
            flush=True,
        )


class Domain:
    """The volumes of one domain, held in memory at the working voxel size."""

    def __init__(
        self,
        name,
        paths,
        working_voxel_size,
        subvolume_size,
        voxel_size=None,
        tilt_axis='y',
        swap_axes=None,
    ):
        if not paths:
            raise InputError("the %s domain has no volumes" % name)
        self.name = name
        self.volumes = []
        for path in paths:
            data, header_voxel_size = read_mrc(path)
            size = voxel_size or header_voxel_size
            if size > 0:  # else load_for_model says so
                _warn_far_voxel_size(path, size, working_voxel_size)
                check_fits_subvolume(path, data.shape, size, working_voxel_size, subvolume_size)
            volume = load_for_model(path, working_voxel_size, voxel_size)[0]
            if swap_axes:  # the missing-wedge task's second domain (see wedge.py)
                volume = np.ascontiguousarray(np.swapaxes(volume, *swap_axes))
            self.volumes.append(volume)
        self.size = subvolume_size
        self.flip_groups = wedge_preserving_flips(tilt_axis)
        # Each volume is drawn in proportion to how many subvolumes it holds.
        counts = np.array(
            [np.prod([s - subvolume_size + 1 for s in v.shape]) for v in self.volumes],
            dtype=np.float64,
        )
        self.weights = counts / counts.sum()

    def sample(self, rng, count):
        """`count` random subvolumes, shape (count, 1, s, s, s), float32.

        Augmentation is limited to the flips that keep the missing wedge as it is (see
        wedge_preserving_flips): the model must learn the wedge of the data, asymmetric
        tilt ranges included.
        """
        s = self.size
        batch = np.empty((count, 1, s, s, s), dtype=np.float32)
        for i in range(count):
            volume = self.volumes[rng.choice(len(self.volumes), p=self.weights)]
            corner = [rng.integers(0, dim - s + 1) for dim in volume.shape]
            patch = volume[tuple(slice(c, c + s) for c in corner)]
            flips = tuple(
                axis for group in self.flip_groups if rng.random() < 0.5 for axis in group
            )
            batch[i, 0] = np.flip(patch, axis=flips) if flips else patch
        return batch
