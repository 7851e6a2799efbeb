"""Missing-wedge compensation by DUAL (paper, Fig. 6 and section 2.5).

Domain A is the tomograms as they are; domain B is the same tomograms with the beam
axis (Z) and the in-plane axis perpendicular to the tilt axis swapped, so B's missing
cone lies where A was measured. A DUAL model trained with task 'wedge' (train.py,
same code path as denoising) translates A into B with its denoiser Dn. The compensated
tomogram keeps every measured Fourier coefficient of A and takes the coefficients of
A's missing cone from the translation, with a cosine transition a few degrees wide
just inside the cone's border.

Geometry: volumes are (Z, Y, X), the beam along Z, the tilt axis Y (or X). A tilt of
theta measures the central plane containing the direction (cos theta, -sin theta) in
(k_perp, k_z), k_perp the in-plane frequency perpendicular to the tilt axis. This is
the phantom simulator's convention (synth/acquisition.py); for data with the opposite
handedness, give the tilt range negated and swapped (-70..50 for 50..-70).
"""

import numpy as np

from dual_engine.data import ARRAY_AXIS_OF_TILT_AXIS
from dual_engine.contract import (
    PAPER_SIMULATION_SETTINGS,
    TRANSITION_DEGREES,
    InputError,
    check_tilt_range,
)
from dual_engine.io import read_mrc


def _direction_angle(k_perp, k_z):
    """The tilt angle (degrees, in [-90, 90)) whose central plane holds (k_perp, k_z)."""
    angle = np.degrees(np.arctan2(-k_z, k_perp))
    return (angle + 90.0) % 180.0 - 90.0


def _distance_outside(angle, tmin, tmax):
    """Angular distance (degrees, modulo 180) from `angle` to the interval [tmin, tmax]."""
    inside = (angle >= tmin) & (angle <= tmax)
    distance = np.minimum((tmin - angle) % 180.0, (angle - tmax) % 180.0)
    return np.where(inside, 0.0, distance)


def _frequency_grids(shape, tilt_axis):
    """(k_perp, k_z) broadcastable to the rfftn grid of a (Z, Y, X) volume."""
    nz, ny, nx = shape
    kz = np.fft.fftfreq(nz)[:, None, None]
    if ARRAY_AXIS_OF_TILT_AXIS[tilt_axis] == 1:  # tilt about Y: k_perp is k_x, the rfft axis
        k_perp = np.fft.rfftfreq(nx)[None, None, :]
    else:  # tilt about X: k_perp is k_y
        k_perp = np.fft.fftfreq(ny)[None, :, None]
    return k_perp, kz


def measured_weight(shape, tilt_range, tilt_axis='y', transition=TRANSITION_DEGREES):
    """Weights on the rfftn grid of a (Z, Y, X) volume: 1 where the tilt series measured
    the Fourier coefficient, 0 inside the missing cone, and a cosine ramp over the
    `transition` degrees just inside the cone's border. The tilt axis line (k_perp =
    k_z = 0), which every tilt measures, has weight 1."""
    tmin, tmax = check_tilt_range(tilt_range)
    if tilt_axis not in ARRAY_AXIS_OF_TILT_AXIS:
        raise InputError("tilt axis must be 'x' or 'y' (got %r)" % (tilt_axis,))
    k_perp, kz = _frequency_grids(shape, tilt_axis)
    distance = _distance_outside(_direction_angle(k_perp, kz), tmin, tmax)
    if transition > 0:
        ramp = 0.5 * (1.0 + np.cos(np.pi * np.clip(distance / transition, 0.0, 1.0)))
    else:
        ramp = (distance == 0).astype(np.float64)
    ramp = np.where((k_perp == 0) & (kz == 0), 1.0, ramp)
    return np.broadcast_to(ramp, _rfft_shape(shape)).astype(np.float32)


def _rfft_shape(shape):
    return tuple(shape[:-1]) + (shape[-1] // 2 + 1,)


def combine(
    volume, translated, tilt_range, tilt_axis='y', transition=TRANSITION_DEGREES, match_gain=False
):
    """`volume`'s Fourier coefficients where measured, `translated`'s in the missing cone.

    match_gain: first scale `translated` by the least-squares gain that best maps its
    measured coefficients onto `volume`'s. An unpaired translation between two domains
    of the same kind may come out with its contrast inverted (nothing in either domain
    tells the polarity) or rescaled; the measured coefficients, which both share, fix
    both. Returns (result, gain).
    """
    if volume.shape != translated.shape:
        raise InputError(
            'volume %s and translation %s differ in shape' % (volume.shape, translated.shape)
        )
    weight = measured_weight(volume.shape, tilt_range, tilt_axis, transition)
    spectrum, fill = np.fft.rfftn(volume), np.fft.rfftn(translated)
    gain = 1.0
    if match_gain:
        measured = weight == 1
        measured[(0,) * volume.ndim] = False  # the mean says nothing about contrast
        energy = float(np.sum(np.abs(fill[measured]) ** 2))
        if energy > 0:
            gain = float(np.real(np.sum(spectrum[measured] * np.conj(fill[measured]))) / energy)
    spectrum = weight * spectrum + (1.0 - weight) * gain * fill
    result = np.fft.irfftn(spectrum, s=volume.shape).astype(np.float32)
    return (result, gain) if match_gain else result


def remove_wedge(volume, tilt_range, tilt_axis='y', transition=0.0):
    """`volume` with its Fourier coefficients in the missing cone set to zero."""
    weight = measured_weight(volume.shape, tilt_range, tilt_axis, transition)
    return np.fft.irfftn(weight * np.fft.rfftn(volume), s=volume.shape).astype(np.float32)


def cone_mask(shape, tilt_range, tilt_axis='y', band=(0.0, 0.5)):
    """Boolean rfftn-grid mask of the missing cone (no transition), limited to the radial
    band (cycles/voxel) given."""
    weight = measured_weight(shape, tilt_range, tilt_axis, transition=0.0)
    radius = radial_frequency(shape)
    return (weight == 0) & (radius >= band[0]) & (radius <= band[1])


def turned_cone_mask(shape, tilt_range):
    """The rfftn-grid missing cone (tilt axis Y) of the same tilt series turned by 90
    degrees about Y, i.e. with the beam along X: the second wedge of the paper's Table 3
    test, which does not overlap the first. The tilt-axis line is excluded."""
    tmin, tmax = check_tilt_range(tilt_range)
    kz = np.fft.fftfreq(shape[0])[:, None, None]
    kx = np.fft.rfftfreq(shape[2])[None, None, :]
    # (kz, kx) plays the part that (kx, kz) plays for the beam along Z.
    cone = (_distance_outside(_direction_angle(kz, kx), tmin, tmax) > 0) & ~((kx == 0) & (kz == 0))
    return np.broadcast_to(cone, _rfft_shape(shape))


def radial_frequency(shape):
    """|k| in cycles/voxel on the rfftn grid of a (Z, Y, X) volume."""
    nz, ny, nx = shape
    return np.sqrt(
        np.fft.fftfreq(nz)[:, None, None] ** 2
        + np.fft.fftfreq(ny)[None, :, None] ** 2
        + np.fft.rfftfreq(nx)[None, None, :] ** 2
    )


def estimate_tilt_range(volume, tilt_axis='y', band=(0.05, 0.3), step=1.0):
    """The tilt range measured in `volume`, from its Fourier power by direction.

    The power is summed along the tilt axis, normalised per radial shell (so the
    radial fall-off of the data does not matter) and averaged per direction in the band
    of frequencies given; directions whose log power lies above the midpoint of the
    profile's 10th and 90th percentiles are measured. Returns (min, max) in degrees.
    """
    volume = np.asarray(volume, dtype=np.float32)
    power = np.abs(np.fft.rfftn(volume - volume.mean())) ** 2
    k_perp, kz = _frequency_grids(volume.shape, tilt_axis)
    angle = np.broadcast_to(_direction_angle(k_perp, kz), power.shape)
    radius = radial_frequency(volume.shape)
    inside = (radius >= band[0]) & (radius <= band[1]) & ~((k_perp == 0) & (kz == 0))
    shells = np.round(radius[inside] * max(volume.shape)).astype(int)
    log_power = np.log(power[inside] + 1e-12)
    shell_median = np.array(
        [
            np.median(log_power[shells == s]) if np.any(shells == s) else 0
            for s in range(shells.max() + 1)
        ]
    )
    log_power -= shell_median[shells]
    bins = np.floor((angle[inside] + 90.0) / step).astype(int)
    count = int(round(180.0 / step))
    sums = np.bincount(bins, weights=log_power, minlength=count)[:count]
    hits = np.bincount(bins, minlength=count)[:count]
    centres = -90.0 + step * (np.arange(count) + 0.5)
    filled = hits > 0
    if filled.sum() < count // 2:
        raise InputError('the volume is too small to estimate its tilt range; give it')
    # Thin volumes leave directions near the untilted one without samples: interpolate.
    profile = np.interp(centres, centres[filled], sums[filled] / hits[filled])
    low, high = np.percentile(profile, [10, 90])
    if high - low < 1.0:  # less than a factor e in power: no visible wedge
        raise InputError(
            'no missing wedge is visible in the Fourier power of this volume; give the tilt range'
        )
    measured = profile > 0.5 * (low + high)
    zero = int(np.argmin(np.abs(centres)))
    if not measured[zero]:
        raise InputError(
            'the untilted direction looks unmeasured: the tilt axis is '
            'probably not %s; give the tilt range and axis' % tilt_axis
        )
    hi = zero
    while hi + 1 < count and measured[hi + 1]:
        hi += 1
    lo = zero
    while lo > 0 and measured[lo - 1]:
        lo -= 1
    return float(centres[lo] - step / 2), float(centres[hi] + step / 2)


def wedge_config(cfg, tomogram_paths, tilt_range=None, tilt_axis='y', given=()):
    """`cfg` set up for the wedge task; the tilt range estimated from the first tomogram
    when not given (printed, and stored in the model). The simulation settings not in
    `given` (the names the caller set) are the paper's (PAPER_SIMULATION_SETTINGS)."""
    from dataclasses import replace

    if tilt_range is None:
        tilt_range = estimate_tilt_range(np.array(read_mrc(tomogram_paths[0])[0]), tilt_axis)
        print(
            'Estimated tilt range from %s: %.0f..%.0f degrees'
            % (tomogram_paths[0], tilt_range[0], tilt_range[1]),
            flush=True,
        )
    # Both domains are the same tomograms: the translation keeps their contrast.
    contrast = 'same' if cfg.noisy_contrast == 'auto' else cfg.noisy_contrast
    simulation = {k: v for k, v in PAPER_SIMULATION_SETTINGS.items() if k not in given}
    return replace(
        cfg,
        **simulation,
        task='wedge',
        tilt_axis=tilt_axis,
        noisy_contrast=contrast,
        tilt_range=check_tilt_range(tilt_range),
    )
