"""The fitted noise model of simulation (spectral.py). Fitted on tomograms made as a
linear image of their maps plus noise with a missing wedge, and on a simulator that
makes them the same way, its simulations of other maps, on other grids, have the
tomograms' spectrum, missing wedge and share of structure, where the map plus white
noise at the same SNR has none of them. Malformed spectra in a model file are refused."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from dual_engine import spectral, wedge
from dual_engine.io import InputError, standardize

TILT = (-60.0, 60.0)
SHAPE = (64, 64, 64)


def _map(shape, seed):
    """Blobs of several sizes: a stand-in for a density map."""
    rng = np.random.default_rng(seed)
    points = (rng.random(shape) < 0.004).astype(np.float32)
    return standardize(ndimage.gaussian_filter(points, 1.5) + ndimage.gaussian_filter(points, 3))


def _filtered(volume, weight):
    return np.fft.irfftn(np.fft.rfftn(volume) * weight, s=volume.shape).astype(np.float32)


def _tomogram(v, seed, pad=16, halves=False):
    """A linear image of the map (a low-pass transfer, the missing wedge) plus noise
    coloured by the wedge (a sixteenth of the power left in the cone) and a radial
    fall-off, at an SNR of about 0.2; made on a grid `pad` voxels thicker on each side
    and cut out of it, as a tomogram is a box cut out of a longer specimen. With halves:
    (tomogram, even half, odd half), the halves with the same signal and independent
    noise of twice the power, the tomogram their mean."""
    rng = np.random.default_rng(seed)
    v = np.pad(v, ((pad, pad), (0, 0), (0, 0)))
    radius = wedge.radial_frequency(v.shape)
    measured = wedge.measured_weight(v.shape, TILT, 'y', transition=0.0)
    signal = _filtered(v, measured * np.exp(-((radius / 0.15) ** 2)))
    colour = np.maximum(measured, 0.25) / (1 + radius / 0.1)
    noises = [_filtered(rng.standard_normal(v.shape), colour) for _ in range(2 if halves else 1)]
    scale = noises[0].std() * np.sqrt(0.2)
    inside = slice(pad, v.shape[0] - pad)
    signal = signal[inside] / signal.std()
    if not halves:
        return standardize(signal + noises[0][inside] / scale)
    even, odd = (signal + np.sqrt(2) * n[inside] / scale for n in noises)
    full = (even + odd) / 2
    mean, std = full.mean(), full.std()
    return tuple(((x - mean) / std).astype(np.float32) for x in (full, even, odd))


def _fitted(shape=SHAPE):
    maps = [_map(shape, 10 + i) for i in range(3)]
    real = [_tomogram(_map(shape, 20 + i), 30 + i) for i in range(3)]
    simulated = [_tomogram(v, 40 + i) for i, v in enumerate(maps)]  # a faithful simulator
    return spectral.fit(real, maps, simulated, 'y')


def _fitted_paired(shape=SHAPE):
    """The reference fit: real tomograms with their own maps."""
    maps = [_map(shape, 20 + i) for i in range(3)]
    return spectral.fit_paired([_tomogram(v, 30 + i) for i, v in enumerate(maps)], maps, 'y')


def radial_log_power(volume, bins=12):
    """log10 of the mean power of the standardised volume in `bins` radial shells."""
    power = np.abs(np.fft.rfftn(standardize(volume))) ** 2
    radius = wedge.radial_frequency(volume.shape)
    which = np.minimum((radius / 0.5 * bins).astype(int), bins)
    sums = np.bincount(which.ravel(), power.ravel(), bins + 1)[1:bins]
    return np.log10(sums / np.bincount(which.ravel(), minlength=bins + 1)[1:bins])


def spectrum_distance(a, b):
    """RMS difference of two volumes' radial log10 power spectra."""
    return float(np.sqrt(np.mean((radial_log_power(a) - radial_log_power(b)) ** 2)))


def cone_ratio(volume, tilt=TILT, band=(0.05, 0.4)):
    """Mean power inside the missing cone over the mean power outside it, in `band`."""
    power = np.abs(np.fft.rfftn(standardize(volume))) ** 2
    radius = wedge.radial_frequency(volume.shape)
    inside = (radius > band[0]) & (radius < band[1])
    cone = wedge.cone_mask(volume.shape, tilt, band=band)
    return power[cone].mean() / power[inside & ~cone].mean()


@pytest.mark.parametrize(
    "shape, fitted", [(SHAPE, _fitted), ((56, 48, 72), _fitted), (SHAPE, _fitted_paired)]
)
def test_fitted_simulation_has_the_tomograms_spectrum_wedge_and_structure(shape, fitted):
    spectra = fitted()
    assert spectra['tilt_range'] == pytest.approx(TILT, abs=6)
    v = _map(shape, 99)
    real = _tomogram(v, 98)
    simulated = spectral.synthesize(v, spectra, key=1, tilt_axis='y')
    assert simulated.shape == shape and simulated.dtype == np.float32
    white = standardize(v + np.random.default_rng(2).standard_normal(shape) / np.sqrt(0.2))

    assert spectrum_distance(simulated, real) < 0.1 < spectrum_distance(white, real)
    # the missing wedge is there, about as deep (on these small grids the spectra's
    # binning smears its border by a few degrees: up to 1.8x the real cone power)
    assert 0.5 < cone_ratio(simulated) / cone_ratio(real) < 2
    assert cone_ratio(white) > 5 * cone_ratio(real)
    # the map shows through as much as in the real tomogram of it
    corr = [np.corrcoef(x.ravel(), v.ravel())[0, 1] for x in (simulated, real)]
    assert corr[0] == pytest.approx(corr[1], abs=0.05)
    # seeded: the same key draws the same noise, another key other noise
    again = spectral.synthesize(v, spectra, key=1, tilt_axis='y')
    np.testing.assert_array_equal(simulated, again)
    assert not np.allclose(simulated, spectral.synthesize(v, spectra, key=2, tilt_axis='y'))


def test_halves_measure_the_share_of_structure_a_simulator_gets_wrong():
    """A simulator that adds no noise says every frequency is structure: the noise model
    fitted with it has next to no noise. Given the real tomograms' even/odd halves, the
    fit measures the share on them instead and has the noise of the paired reference
    (the real tomograms with their own maps)."""
    maps = [_map(SHAPE, 20 + i) for i in range(3)]
    tomograms = [_tomogram(v, 30 + i, halves=True) for i, v in enumerate(maps)]
    real, halves = [t[0] for t in tomograms], [t[1:] for t in tomograms]
    others = [_map(SHAPE, 10 + i) for i in range(3)]  # the unpaired clean domain
    noiseless = spectral.fit(real, others, others, 'y')
    measured = spectral.fit(real, others, others, 'y', halves)
    reference = spectral.fit_paired(real, maps, 'y')
    # where the maps have structure (elsewhere every fit says: all noise)
    structure = noiseless['transfer'] != 0
    noise = {
        name: float(spectra['noise_power'][structure].sum())
        for name, spectra in (('noiseless', noiseless), ('measured', measured), ('ref', reference))
    }
    assert noise['noiseless'] < 0.1 * noise['ref']
    # (the measured share is clipped at 0 where there is next to no structure: on these
    # small grids, with few coefficients per bin, it finds 17% less noise there)
    assert noise['measured'] == pytest.approx(noise['ref'], rel=0.25)
    # and the map shows through its simulations about as much as through a real
    # tomogram of it (0.37 here; the noiseless fit's 0.57, the measured one's 0.44)
    v = _map(SHAPE, 99)
    real_corr = np.corrcoef(_tomogram(v, 98).ravel(), v.ravel())[0, 1]
    corr = {
        name: np.corrcoef(spectral.synthesize(v, spectra, 1, 'y').ravel(), v.ravel())[0, 1]
        for name, spectra in (('noiseless', noiseless), ('measured', measured))
    }
    assert abs(corr['measured'] - real_corr) < 0.1 < abs(corr['noiseless'] - real_corr)


def _band(volume, low, high):
    radius = wedge.radial_frequency(volume.shape)
    return _filtered(volume, (radius >= low) & (radius < high))


def test_frequencies_the_simulator_does_not_image_are_drawn_as_noise(monkeypatch):
    """Where the learned simulator's output does not follow the map (here a band of
    frequencies it fills with noise of its own), the sign of its transfer there is a
    guess: even with the halves saying the band holds structure, the fit draws the band
    as noise, with the real tomograms' power, not as an image of the map of random sign."""
    band = (0.05, 0.15)
    maps = [_map(SHAPE, 20 + i) for i in range(3)]
    tomograms = [_tomogram(v, 30 + i, halves=True) for i, v in enumerate(maps)]
    real, halves = [t[0] for t in tomograms], [t[1:] for t in tomograms]
    others = [_map(SHAPE, 10 + i) for i in range(3)]
    rng = np.random.default_rng(5)
    unimaged = []
    for i, v in enumerate(others):
        faithful = _tomogram(v, 40 + i)
        noise = _band(rng.standard_normal(SHAPE), *band)
        noise *= _band(faithful, *band).std() / noise.std()
        unimaged.append(faithful - _band(faithful, *band) + noise)
    v = _map(SHAPE, 99)
    reference = _tomogram(v, 98)

    def band_corr(x, y, low, high):
        return np.corrcoef(_band(x, low, high).ravel(), _band(y, low, high).ravel())[0, 1]

    # two simulations of one map share its image (of whatever sign) and not their noise
    # (the last ones: with the rule)
    shared = {}
    for rule, min_share in (('off', 0.0), ('on', spectral.MIN_SIGNED_SHARE)):
        monkeypatch.setattr(spectral, 'MIN_SIGNED_SHARE', min_share)
        spectra = spectral.fit(real, others, unimaged, 'y', halves)
        one, two = (spectral.synthesize(v, spectra, key=k, tilt_axis='y') for k in (1, 2))
        shared[rule] = band_corr(one, two, *band)
    # (0.31 and 0.69 here: on grids this small a bin's share of chance, and the taper's
    # leakage from outside the band, still pass some of the band as structure)
    assert shared['on'] < 0.5 * shared['off']
    assert _band(one, *band).std() == pytest.approx(_band(reference, *band).std(), rel=0.2)
    # below the band the map shows through as in the real tomogram
    low = [band_corr(x, v, 0.0, 0.04) for x in (one, reference)]
    assert low[0] == pytest.approx(low[1], abs=0.1)


def test_either_tilt_axis_gives_the_same_spectra(monkeypatch):
    """The spectra are binned in the tilt axis's frame: the same tomograms turned so
    that their tilt axis is X fit the same spectra (but where the two rfftn grids hold
    a coefficient twice and the smoothing weighs it so) and simulate the same. (The
    tilt range is given: its estimate on such small grids is not what is tested.)"""
    monkeypatch.setattr(spectral, 'measured_tilt_range', lambda volumes, axis: TILT)
    shape = (32, 40, 48)
    maps = [_map(shape, 10 + i) for i in range(2)]
    real = [_tomogram(v, 30 + i) for i, v in enumerate(maps)]
    turned = [np.ascontiguousarray(v.transpose(0, 2, 1)) for v in real + maps]
    about_y = spectral.fit_paired(real, maps, 'y')
    about_x = spectral.fit_paired(turned[:2], turned[2:], 'x')
    power_y, power_x = about_y['noise_power'].numpy(), about_x['noise_power'].numpy()
    assert np.median(np.abs(power_x - power_y)[power_y > 0] / power_y[power_y > 0]) < 0.01
    v = _map(shape, 99)
    simulated = {
        'y': spectral.synthesize(v, about_y, key=1, tilt_axis='y'),
        'x': spectral.synthesize(
            np.ascontiguousarray(v.transpose(0, 2, 1)), about_x, key=1, tilt_axis='x'
        ).transpose(0, 2, 1),
    }
    # the wedge where it belongs (the spectra of 'y' simulated about X: 4.9x the cone power)
    assert cone_ratio(simulated['x']) == pytest.approx(cone_ratio(simulated['y']), rel=0.2)
    assert cone_ratio(simulated['x']) < 0.5 * cone_ratio(v)


def test_the_noise_is_as_strong_everywhere():
    """A real tomogram's noise does not follow its structures; the fitted noise neither:
    on a map that is empty in one half, both halves get the same noise level."""
    spectra = _fitted()
    v = _map(SHAPE, 7)
    v[:, :, 32:] = 0
    simulated = spectral.synthesize(standardize(v), spectra, key=3, tilt_axis='y')
    empty = simulated[:, :, 40:56].std()
    assert empty > 0.7 * simulated[:, :, 8:24].std()


def test_no_visible_wedge_bins_without_a_cone():
    rng = np.random.default_rng(0)
    volumes = [
        standardize(ndimage.gaussian_filter(rng.standard_normal(SHAPE), 1)) for _ in range(2)
    ]
    spectra = spectral.fit(volumes, volumes, volumes, 'y')
    assert spectra['tilt_range'] is None
    out = spectral.synthesize(volumes[0], spectra, key=0, tilt_axis='y')
    assert out.shape == SHAPE and np.isfinite(out).all()


def test_malformed_spectra_are_refused():
    good = _fitted()
    assert spectral.checked(good, 'm.pt') is good
    bad = [
        ('malformed', [1, 2]),
        ('malformed', dict(good, extra=1)),
        ('wrong shape', dict(good, transfer=torch.zeros(3, 4))),
        ('not finite', dict(good, noise_power=good['noise_power'] * float('nan'))),
        ('not finite', dict(good, transfer=good['transfer'].double())),
        ('negative', dict(good, noise_power=-good['noise_power'] - 1)),
        ('tilt range', dict(good, tilt_range=[70.0, -70.0])),
        ('tilt range', dict(good, tilt_range='-60 60')),
    ]
    for match, spectra in bad:
        with pytest.raises(InputError, match=match):
            spectral.checked(spectra, 'm.pt')
