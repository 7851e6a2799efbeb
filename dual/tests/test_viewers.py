"""The viewers' plotting functions, headless (Agg): they draw, and the Fourier panels
show a missing wedge where it is."""

import json
import unittest

import numpy as np
from matplotlib.figure import Figure

from dual.convert import LOSS_KEYS, readTrainingLog
from dual.viewers import plots


def wedgeVolume(shape=(48, 64, 64), maxTilt=60.0, seed=0):
    """White noise without the Fourier components a +-maxTilt tilt series about Y misses:
    those within (90 - maxTilt) degrees of the kz axis."""
    noise = np.random.default_rng(seed).standard_normal(shape)
    kz, _, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing='ij')
    missing = np.abs(kx) < np.abs(kz) * np.tan(np.radians(90 - maxTilt))
    spectrum = np.fft.fftn(noise)
    spectrum[missing] = 0
    return np.real(np.fft.ifftn(spectrum)).astype(np.float32)


class TestPlots(unittest.TestCase):
    def test_training_curves_one_panel_per_loss(self):
        records = [
            dict(
                iteration=i,
                iterations=20,
                seconds=i,
                eta_seconds=20 - i,
                **{k: 1.0 / i for k in LOSS_KEYS},
            )
            for i in range(1, 21)
        ]
        figure = plots.plotTrainingCurves(records)
        self.assertIsInstance(figure, Figure)
        self.assertEqual(len(figure.axes), len(LOSS_KEYS))
        for axes in figure.axes:
            x, y = axes.lines[0].get_data()
            self.assertEqual(list(x), list(range(1, 21)))
        self.assertIn('iteration 20 of 20', figure.get_suptitle())

    def test_training_log_reader_skips_a_line_being_written(self):
        import tempfile

        with tempfile.NamedTemporaryFile('w', suffix='.jsonl', delete=False) as f:
            f.write(json.dumps({'iteration': 1, 'loss': 2.0}) + '\n')
            f.write('{"iteration": 2, "lo')
        self.assertEqual([r['iteration'] for r in readTrainingLog(f.name)], [1])
        self.assertEqual(readTrainingLog('/no/such/log.jsonl'), [])

    def test_fourier_xz_section_shows_the_missing_wedge(self):
        volume = wedgeVolume()
        sections = plots.fourierSections(volume)
        xz, xy = sections['XZ'], sections['XY']
        nz, nx = xz.shape
        kz, kx = np.meshgrid(np.arange(nz) - nz // 2, np.arange(nx) - nx // 2, indexing='ij')
        radius = np.hypot(kz / nz, kx / nx)
        ring = (radius > 0.1) & (radius < 0.4)
        angle = np.degrees(np.arctan2(np.abs(kx / nx), np.abs(kz / nz)))  # 0: along kz
        inWedge, outside = xz[ring & (angle < 20)].mean(), xz[ring & (angle > 40)].mean()
        self.assertLess(inWedge, 0.5 * outside)
        # The XY section (kz = 0) is untouched by a wedge about Y.
        self.assertGreater(xy[xy.shape[0] // 2 + 8, xy.shape[1] // 2], 0.5 * outside)

    def test_slices_and_spectra_four_panels_per_volume(self):
        volume = wedgeVolume()
        figure = plots.plotSlicesAndSpectra([volume, volume * 2], ['input', 'denoised'])
        self.assertEqual(len(figure.axes), 8)
        self.assertEqual(figure.axes[1].images[0].get_array().shape, (48, 64))  # XZ: z by x

    def test_real_vs_simulated_statistics(self):
        real = np.random.default_rng(1).standard_normal((32, 40, 40)).astype(np.float32)
        figure = plots.plotRealVsSimulated(real, 10.0, wedgeVolume(), 12.0)
        histogram, spectrum = figure.axes
        self.assertEqual(len(spectrum.lines), 2)
        self.assertEqual(len(histogram.patches), 2)
        frequency, power = plots.radialPowerSpectrum(real, 10.0)
        self.assertAlmostEqual(frequency.max(), 0.05, delta=0.002)  # Nyquist of 10 A
        self.assertTrue(np.all(power >= 0))
