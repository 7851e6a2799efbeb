"""The fitted noise model of simulation: a synthetic tomogram as a linear image of its map
plus stationary Gaussian noise, both fitted from the training data when training ends.

Why: the learned simulator Gs(v + P(Gn(z))) is told from real tomograms by any
classifier (bench/run_realism.py: ROC AUC 1.00 on every training seed), by its noise
level that follows the structures (Gs is nonlinear), its period-2 sublattice pattern
and a cone that is not empty enough. A tomogram is, to a good approximation, a linear
image of the specimen (contrast transfer, missing wedge) plus reconstruction noise that
is the same everywhere. So:

  share(k)        the learned simulator's share of structure per frequency: the power
                  of its linear response to the map (the regression, per frequency, of
                  Gs(v + P(Gn(z))) on v over the clean training maps, unbiased by the
                  simulator's noise, which does not correlate with v) over its power
  transfer(k)     that linear response, scaled so that its share of the real training
                  tomograms' power is share(k)
  noise_power(k)  the rest of the real tomograms' power, (1 - share(k)) times it

and a simulation is irfft(transfer * F(v) + sqrt(noise_power) * F(white noise)): the
learned simulator says how much of each frequency is structure, the real tomograms how
much power each frequency has. Where the real tomograms come with their even/odd halves
(reconstructions of the even and the odd frames: the same structure, independent
noise), share(k) is measured on them instead (measured_share): the learned simulator's
share is wrong where the data's CTF makes the structure's share rise and fall
(bench/run_realism.py: classifier AUC 0.83 with the learned share, 0.57 with the
measured one, about as low as with the share measured on pairs of tomograms and their
maps, 0.56). The transfer's sign (the contrast and the CTF's phase flips) is the
learned simulator's either way, and where the learned simulator hardly responds to the
map (its share below MIN_SIGNED_SHARE) that sign is a guess: there the whole power is
drawn as noise (bench/run_sim2real.py: segmenters trained on the simulations picked
real particles with F1 0.655 before, 0.694 after; the realism AUC rose from 0.57 to
0.62, and to 0.77 for another training seed). Both spectra are binned on a coarse
grid of frequencies (cycles/voxel), so a model simulates maps of any size, with the
coefficients binned apart by their direction's angle to the border of the missing cone
(the tilt range measured in the real tomograms): the cone's sharp border survives the
binning.
"""

import numpy as np
import torch
from scipy import ndimage, signal

from dual_engine import wedge
from dual_engine.contract import InputError
from dual_engine.data import ARRAY_AXIS_OF_TILT_AXIS
from dual_engine.io import standardize

# Frequency bins per axis, in the frame of the tilt axis: a tilt series measures Fourier
# space on planes through the tilt axis a few degrees apart (3 degrees: 1/64 cycles/voxel
# apart at 0.3 cycles/voxel), and both its signal and its noise keep that fine angular
# pattern across the axis. 64 bins per axis smoothed it into a continuum that a
# classifier told from real tomograms (bench/run_realism.py's paired oracle, measured by
# hand: AUC 0.73; 128 across and 32 / 64 / 128 along the axis: 0.60 / 0.53 / 0.54).
GRID = 128  # across the tilt axis: the beam (kz) and the other lateral axis (k_perp)
GRID_ALONG = 64  # along the tilt axis
SMOOTHING = 0.75  # bins: Gaussian smoothing of the binned spectra (fills empty bins)
FIT_SIDE = 256  # volumes are fitted on a central crop of at most this many voxels per axis
FIT_MAPS = 4  # clean maps the learned simulator is run over (spread over the given ones)
# A tomogram is a box cut out of a longer stretch of specimen and noise: its Fourier
# transform leaks power from the measured directions into the missing cone, most from
# the short beam axis. The fit estimates the spectra inside the box (a Tukey window of
# TAPER over each axis, little leakage), and a simulation draws its noise on a grid
# longer along the beam by Z_PADDING of its thickness on each side and is cut out of
# it: it leaks as a tomogram does. (Without both, 32^3 subvolumes of the benchmark's
# simulations had 16% more power in the cone than the real ones; with them 2%.)
TAPER = 0.5
Z_PADDING = 0.5
MIN_MAP_POWER = 1e-2  # of the maps' mean power: weaker frequencies carry no structure
# Below this share of structure in the learned simulator's output a frequency is drawn
# as noise: measured by hand on the benchmark's engine-default model (denoise set, seed
# 0), its transfer has the paired oracle's sign on 43-58% of the oracle's structure
# power where its share is below 0.02 (chance), 68% at 0.02-0.03, 79% at 0.03-0.05 and
# >= 89% above. (On grids of a few dozen voxels a bin's share of chance alone can pass it.)
MIN_SIGNED_SHARE = 0.03
# The coefficients are binned apart by their direction's angle to the border of the
# measured tilt range: there the power falls by a decade within a few degrees (the
# benchmark's phantom reconstructions), faster than the coarse grid resolves.
BORDER = 6.0  # degrees either side of the border, in bands of BAND_WIDTH degrees
BAND_WIDTH = 2.0
SIDES = 2 + int(2 * BORDER / BAND_WIDTH)  # well measured, the bands, well inside the cone
KEYS = ('transfer', 'noise_power', 'tilt_range')


def coarse_shape():
    """(angular side: 0 measured ... SIDES - 1 in the cone, kz bin, bin along the tilt
    axis, bin of k_perp >= 0 across it): the same for either tilt axis."""
    return (SIDES, GRID, GRID_ALONG, GRID // 2 + 1)


def _bins(shape, plane, tilt_axis):
    """Flat index into one side of the coarse grid of each rfftn coefficient of a
    `shape` volume (of its kz row `plane` only, unless None). The power and the transfer
    of a real volume are the same at k and -k: a coefficient with k_perp < 0 (tilt
    about X: k_perp is k_y) takes the bin of -k."""
    nz, ny, nx = shape
    fz = np.fft.fftfreq(nz)[:, None, None]
    if plane is not None:
        fz = fz[plane : plane + 1]
    fy, fx = np.fft.fftfreq(ny)[None, :, None], np.fft.rfftfreq(nx)[None, None, :]
    if ARRAY_AXIS_OF_TILT_AXIS[tilt_axis] == 1:
        along, perp = fy, fx
    else:
        flip = np.where(fy < 0, -1.0, 1.0)
        fz, along, perp = fz * flip, fx * flip, fy * flip
    jz = np.rint(fz * GRID).astype(np.int64) % GRID
    ja = np.rint(along * GRID_ALONG).astype(np.int64) % GRID_ALONG
    jp = np.rint(perp * GRID).astype(np.int64)
    return (jz * GRID_ALONG + ja) * (GRID // 2 + 1) + jp


def _sides(shape, tilt_range, tilt_axis, plane):
    """The angular side of each rfftn coefficient (of kz row `plane` only, unless None):
    its direction's signed angle to the border of the tilt range, in bands."""
    rows = shape[0] if plane is None else 1
    out_shape = (rows, shape[1], shape[2] // 2 + 1)
    if tilt_range is None:
        return np.zeros(out_shape, dtype=np.int64)
    k_perp, kz = wedge._frequency_grids(shape, tilt_axis)
    if plane is not None:
        kz = kz[plane : plane + 1]
    angle = wedge._direction_angle(k_perp, kz)
    tmin, tmax = tilt_range
    outside = wedge._distance_outside(angle, tmin, tmax)
    signed = np.where(outside > 0, outside, -np.minimum(angle - tmin, tmax - angle))
    side = np.clip(np.floor((signed + BORDER) / BAND_WIDTH) + 1, 0, SIDES - 1)
    return np.broadcast_to(side.astype(np.int64), out_shape)


def _index(shape, tilt_range, tilt_axis, plane=None):
    """Flat index into the coarse grid of each rfftn coefficient (or of kz row `plane`)."""
    per_side = int(np.prod(coarse_shape()[1:]))
    return _bins(shape, plane, tilt_axis) + _sides(shape, tilt_range, tilt_axis, plane) * per_side


def fit_crop(volume):
    """The central part of a volume that the fit uses (FIT_SIDE)."""
    starts = [max((n - FIT_SIDE) // 2, 0) for n in volume.shape]
    return volume[tuple(slice(s, s + FIT_SIDE) for s in starts)]


def fit_maps(maps):
    """The maps (at most FIT_MAPS, spread over the list) the fit uses, cropped."""
    step = -(-len(maps) // FIT_MAPS)
    return [fit_crop(v) for v in list(maps)[::step]]


def measured_tilt_range(volumes, tilt_axis):
    """The median tilt range measured in the volumes (wedge.estimate_tilt_range), or None
    where none can be measured (then the spectra are binned without a cone)."""
    ranges = []
    for v in volumes:
        try:
            ranges.append(wedge.estimate_tilt_range(fit_crop(v), tilt_axis))
        except InputError:
            continue
    if not ranges:
        return None
    tmin, tmax = np.median(np.array(ranges, dtype=float), axis=0)
    return (round(float(tmin), 1), round(float(tmax), 1))


def _valid_tilt_range(tilt_range):
    try:
        tmin, tmax = (float(t) for t in tilt_range)
    except (TypeError, ValueError):
        return False
    return -90 < tmin < tmax < 90


class _Binned:
    """Per-bin sums of values over rfftn coefficients, and their counts."""

    def __init__(self):
        size = int(np.prod(coarse_shape()))
        self.sums, self.counts = np.zeros(size), np.zeros(size)

    def add(self, index, values):
        size = self.sums.size
        self.sums += np.bincount(index, weights=values, minlength=size)
        self.counts += np.bincount(index, minlength=size)

    def mean(self):
        """Smoothed means on coarse_shape() (normalised convolution: a bin no coefficient
        fell in takes its neighbours' mean; one far from every coefficient of its side
        takes the nearest side's that has some)."""
        sigma, mode = (0, SMOOTHING, SMOOTHING, SMOOTHING), ('nearest', 'wrap', 'wrap', 'reflect')
        sums = ndimage.gaussian_filter(self.sums.reshape(coarse_shape()), sigma, mode=mode)
        counts = ndimage.gaussian_filter(self.counts.reshape(coarse_shape()), sigma, mode=mode)
        filled = counts >= 1e-3
        mean = np.where(filled, sums / np.maximum(counts, 1e-12), 0.0)
        out = mean.copy()
        for side in range(SIDES):
            missing = ~filled[side]
            for other in sorted(range(SIDES), key=lambda o: abs(o - side))[1:]:
                take = missing & filled[other]
                out[side][take] = mean[other][take]
                missing &= ~take
        return out


def _window(shape):
    """A separable Tukey window (TAPER) of mean square 1: power estimates keep their scale."""
    window = np.ones(shape)
    for axis, n in enumerate(shape):
        window *= signal.windows.tukey(n, TAPER).reshape([-1 if a == axis else 1 for a in range(3)])
    return window / np.sqrt(np.mean(window**2))


def _spectrum(volume, tilt_range, tilt_axis):
    """(rfftn of the tapered volume / sqrt(voxels), flat coarse-grid index of each
    coefficient)."""
    f = np.fft.rfftn(volume * _window(volume.shape)) / np.sqrt(volume.size)
    return f.ravel(), _index(volume.shape, tilt_range, tilt_axis).ravel()


def measured_share(halves, tilt_range, tilt_axis):
    """The share of structure per frequency of full tomograms, measured on their even/odd
    halves (pairs of volumes on one scale): the halves share the structure and not the
    noise, so their cross-spectrum is the structure's power in a half, and the full
    tomogram (their sum) has four times that over the power of the sum."""
    cross, total = _Binned(), _Binned()
    for even, odd in halves:
        fe, index = _spectrum(fit_crop(even), tilt_range, tilt_axis)
        fo = _spectrum(fit_crop(odd), tilt_range, tilt_axis)[0]
        cross.add(index, np.real(fe * np.conj(fo)))
        total.add(index, np.abs(fe + fo) ** 2)
    return np.clip(4.0 * cross.mean() / np.maximum(total.mean(), 1e-30), 0.0, 1.0)


def fit(real_volumes, maps, simulated_maps, tilt_axis, halves=None):
    """The spectra of the fitted noise model (module docstring) from standardised real
    tomograms, standardised clean maps and the learned simulator's tomograms of those
    maps (on the maps' grids). Returns the dict a model file stores ('spectra')."""
    tilt_range = measured_tilt_range(real_volumes, tilt_axis)
    real_power, map_power, cross, sim_power = _Binned(), _Binned(), _Binned(), _Binned()
    for volume in real_volumes:
        f, index = _spectrum(fit_crop(volume), tilt_range, tilt_axis)
        real_power.add(index, np.abs(f) ** 2)
    for v, s in zip(maps, simulated_maps):
        fv, index = _spectrum(fit_crop(v), tilt_range, tilt_axis)
        # the simulator's output scale is its own: its share of structure is what counts
        fs = _spectrum(standardize(fit_crop(s)), tilt_range, tilt_axis)[0]
        map_power.add(index, np.abs(fv) ** 2)
        sim_power.add(index, np.abs(fs) ** 2)
        cross.add(index, np.real(fs * np.conj(fv)))
    # The learned simulator's share of structure per frequency (paired: a map and its
    # simulation), applied to the real tomograms' power: the noise is what the real
    # tomograms have beyond that share. (Subtracting the maps' filtered power from the
    # real power instead mistakes the specimens' differences at low frequencies, where
    # structure dominates, for noise.)
    map_spectrum, sim_spectrum, real_spectrum = (
        b.mean() for b in (map_power, sim_power, real_power)
    )
    # where the maps have next to no power, the regression is noise: no structure there
    weak = map_spectrum < MIN_MAP_POWER * map_spectrum.mean()
    transfer = np.where(weak, 0.0, cross.mean() / np.maximum(map_spectrum, 1e-30))
    learned_share = np.clip(transfer**2 * map_spectrum / np.maximum(sim_spectrum, 1e-30), 0.0, 1.0)
    # where the learned simulator hardly responds to the map, its transfer's sign is a
    # guess: that power is drawn as noise, not as a map's image of random sign
    unsigned = weak | (learned_share < MIN_SIGNED_SHARE)
    if halves:
        share = np.where(unsigned, 0.0, measured_share(halves, tilt_range, tilt_axis))
    else:
        share = np.where(unsigned, 0.0, learned_share)
    transfer = np.sign(transfer) * np.sqrt(share * real_spectrum / np.maximum(map_spectrum, 1e-30))
    noise_power = (1.0 - share) * real_spectrum
    return _spectra(transfer, noise_power, tilt_range)


def fit_paired(real_volumes, their_maps, tilt_axis):
    """The same model measured on real tomograms of known maps (standardised, each
    tomogram with its own map): the transfer is the regression of the tomograms on their
    maps, the noise what it leaves. Not for users, who have no such pairs: the reference
    of what any linear image plus stationary Gaussian noise, on this grid, can reach
    (bench/run_realism.py's 'oracle')."""
    tilt_range = measured_tilt_range(real_volumes, tilt_axis)
    real_power, map_power, cross = _Binned(), _Binned(), _Binned()
    for t, v in zip(real_volumes, their_maps):
        ft, index = _spectrum(fit_crop(t), tilt_range, tilt_axis)
        fv = _spectrum(fit_crop(v), tilt_range, tilt_axis)[0]
        real_power.add(index, np.abs(ft) ** 2)
        map_power.add(index, np.abs(fv) ** 2)
        cross.add(index, np.real(ft * np.conj(fv)))
    map_spectrum = map_power.mean()
    weak = map_spectrum < MIN_MAP_POWER * map_spectrum.mean()
    transfer = np.where(weak, 0.0, cross.mean() / np.maximum(map_spectrum, 1e-30))
    noise_power = np.maximum(real_power.mean() - transfer**2 * map_spectrum, 0.0)
    return _spectra(transfer, noise_power, tilt_range)


def _spectra(transfer, noise_power, tilt_range):
    """The dict a model file stores ('spectra')."""
    return {
        'transfer': torch.from_numpy(transfer.astype(np.float32)),
        'noise_power': torch.from_numpy(noise_power.astype(np.float32)),
        'tilt_range': None if tilt_range is None else [float(t) for t in tilt_range],
    }


def of_an_earlier_grid(spectra):
    """Whether a model file's 'spectra' entry is well formed but binned on another grid
    than this version's (an earlier version's fit: not usable, not malformed either)."""
    if not isinstance(spectra, dict) or set(spectra) != set(KEYS):
        return False
    values = [spectra['transfer'], spectra['noise_power']]
    return (
        all(isinstance(v, torch.Tensor) and v.dim() == 4 for v in values)
        and values[0].shape == values[1].shape
        and tuple(values[0].shape) != coarse_shape()
    )


def checked(spectra, source):
    """The 'spectra' entry of a model file (untrusted), checked; InputError if unusable."""
    if not isinstance(spectra, dict) or set(spectra) != set(KEYS):
        raise InputError('%s: its fitted noise spectra are malformed' % source)
    for key in ('transfer', 'noise_power'):
        value = spectra[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != coarse_shape():
            raise InputError('%s: its fitted %s has the wrong shape' % (source, key))
        if value.dtype != torch.float32 or not torch.isfinite(value).all():
            raise InputError('%s: its fitted %s is not finite float32' % (source, key))
    if (spectra['noise_power'] < 0).any():
        raise InputError('%s: its fitted noise power is negative' % source)
    if spectra['tilt_range'] is not None and not _valid_tilt_range(spectra['tilt_range']):
        raise InputError('%s: its fitted tilt range is invalid' % source)
    return spectra


def synthesize(volume, spectra, key, tilt_axis):
    """A synthetic tomogram (float32) of a standardised map on its grid: the map through
    the fitted transfer plus noise of the fitted power, drawn from seed `key` on a grid
    padded along the beam (Z_PADDING) and cut out of it. The padded map is held in
    memory (about 40 bytes per voxel of the map); the coefficients are weighted one kz
    row at a time."""
    thickness = volume.shape[0]
    pad = int(round(Z_PADDING * thickness))
    volume = np.pad(volume, ((pad, pad), (0, 0), (0, 0)))  # standardised: 0 is the mean
    shape = volume.shape
    white = torch.randn(shape, generator=torch.Generator().manual_seed(key))
    noise = torch.fft.rfftn(white)
    del white
    image = torch.fft.rfftn(torch.as_tensor(np.ascontiguousarray(volume), dtype=torch.float32))
    transfer = spectra['transfer'].reshape(-1)
    amplitude = spectra['noise_power'].reshape(-1).sqrt()
    for z in range(shape[0]):
        index = torch.from_numpy(_index(shape, spectra['tilt_range'], tilt_axis, z)[0].ravel())
        row = image[z].reshape(-1) * transfer[index] + noise[z].reshape(-1) * amplitude[index]
        image[z] = row.reshape(image[z].shape)
    return torch.fft.irfftn(image, s=shape).numpy()[pad : pad + thickness]


# what the fitted noise model's simulations depend on besides the data and the seed (a
# cache of fitted models or of their simulations keys on it)
SETTINGS = dict(
    grid=GRID,
    grid_along=GRID_ALONG,
    smoothing=SMOOTHING,
    fit_side=FIT_SIDE,
    fit_maps=FIT_MAPS,
    taper=TAPER,
    z_padding=Z_PADDING,
    min_map_power=MIN_MAP_POWER,
    min_signed_share=MIN_SIGNED_SHARE,
    border=BORDER,
    band_width=BAND_WIDTH,
)
