"""The plots of the DUAL viewers, as functions of arrays (or files) that draw into a
matplotlib Figure and return it. The viewers pass the figure of a pwem EmPlotter; the
tests call them headless with a plain Figure.

Volumes are numpy arrays indexed [z, y, x] (as mrcfile reads them); the tilt axis is
Y, so the missing wedge shows in XZ sections of the Fourier transform.
"""

import textwrap

import mrcfile
import numpy as np
from matplotlib.figure import Figure

from dual.convert import LOSS_KEYS, LOSS_LABELS, SIGNAL_KEYS

# Fourier panels are computed on a central cube of at most this side (bounded cost).
FOURIER_SIDE = 128


def readVolume(path):
    """A volume as a float32 array [z, y, x] and its voxel size in A."""
    with mrcfile.open(path.split(':')[0], permissive=True) as mrc:
        return np.asarray(mrc.data, dtype=np.float32), float(mrc.voxel_size.x)


def newFigure(figure, size):
    """A new Figure of `size` inches, or `figure` cleared and resized to it (its
    window too): a viewer passes an EmPlotter's figure, whose default size (6 x 5 in)
    would squeeze the panels and make their titles overlap."""
    if figure is None:
        return Figure(figsize=size)
    figure.clear()
    figure.set_size_inches(size, forward=True)
    return figure


# --------------------------------------------------------------- training curves
def plotTrainingCurves(records, figure=None):
    """One panel per loss of the engine's training log, against the iteration; the
    quality signals and the learning rate (if logged) on rows of their own."""
    columns = 4
    panels = []  # (key, row, column); the signals start a row of their own
    for keys in (LOSS_KEYS, SIGNAL_KEYS):
        keys = [k for k in keys if any(k in r for r in records)]
        first = panels[-1][1] + 1 if panels else 0
        panels += [(key, first + i // columns, i % columns) for i, key in enumerate(keys)]
    rows = panels[-1][1] + 1 if panels else 1
    figure = newFigure(figure, (12, 2.4 * rows + 0.6))
    grid = figure.add_gridspec(rows, columns)
    iterations = [r['iteration'] for r in records]
    for key, row, column in panels:
        axes = figure.add_subplot(grid[row, column])
        axes.plot(iterations, [r.get(key, np.nan) for r in records], lw=1)
        axes.set_title(textwrap.fill(LOSS_LABELS.get(key, key), 28), fontsize=10)
        axes.set_xlabel('iteration')
        axes.grid(alpha=0.3)
    if records:
        last = records[-1]
        figure.suptitle(
            'DUAL training: iteration %d of %d' % (last['iteration'], last['iterations'])
        )
    figure.tight_layout()
    return figure


# --------------------------------------------------------------- slices and spectra
def sliceIndex(fraction, length):
    """The slice at `fraction` (0: first, 1: last) of `length` slices; the central one
    for None: one position shown at the same relative depth in volumes of other sizes."""
    if fraction is None:
        return length // 2
    return min(length - 1, max(0, int(round(fraction * (length - 1)))))


def sections(volume, zFraction=None, yFraction=None):
    """{'XY': a z slice, 'XZ': a y slice} of a [z, y, x] volume, at the given fractions
    of its depth and height (default: the central ones)."""
    nz, ny, _ = volume.shape
    return {
        'XY': volume[sliceIndex(zFraction, nz)],
        'XZ': volume[:, sliceIndex(yFraction, ny), :],
    }


def _centralCube(volume, side=FOURIER_SIDE):
    starts = [max(0, (n - side) // 2) for n in volume.shape]
    return volume[tuple(slice(s, s + min(side, n)) for s, n in zip(starts, volume.shape))]


def _apodized(volume):
    """Standardised and tapered to zero at the faces (a Hann window), so the box edges
    do not draw a bright cross through the Fourier transform."""
    volume = np.asarray(volume, dtype=np.float32)
    volume = (volume - volume.mean()) / (volume.std() or 1.0)
    for axis, n in enumerate(volume.shape):
        shape = [1, 1, 1]
        shape[axis] = n
        volume = volume * np.hanning(n).reshape(shape).astype(np.float32)
    return volume


def fourierSections(volume, side=FOURIER_SIDE):
    """Central XY (kz = 0) and XZ (ky = 0) sections of log(1 + |F|) of the volume's
    central cube: the XZ section shows the missing wedge of a single-axis tilt series."""
    transform = np.fft.fftshift(np.fft.fftn(_apodized(_centralCube(volume, side))))
    amplitude = np.log1p(np.abs(transform))
    nz, ny, _ = amplitude.shape
    return {'XY': amplitude[nz // 2], 'XZ': amplitude[:, ny // 2, :]}


def plotSlicesAndSpectra(volumes, titles, figure=None, zFraction=None, yFraction=None):
    """One row per volume: XY and XZ slices (at zFraction and yFraction of its depth and
    height, default central) and the XY and XZ sections of its Fourier amplitudes (e.g.
    input vs denoised, or map vs simulated)."""
    figure = newFigure(figure, (12, 3 * len(volumes) + 0.4))
    columns = ('XY slice', 'XZ slice', '|F|, XY section', '|F|, XZ section (missing wedge)')
    for row, (volume, title) in enumerate(zip(volumes, titles)):
        nz, ny, _ = volume.shape
        positions = (  # under each slice: where it is (volumes may differ in size)
            'z = %d of 0-%d' % (sliceIndex(zFraction, nz), nz - 1),
            'y = %d of 0-%d' % (sliceIndex(yFraction, ny), ny - 1),
        )
        slices, spectra = sections(volume, zFraction, yFraction), fourierSections(volume)
        panels = (slices['XY'], slices['XZ'], spectra['XY'], spectra['XZ'])
        for column, (image, label) in enumerate(zip(panels, columns)):
            axes = figure.add_subplot(len(volumes), len(columns), row * len(columns) + column + 1)
            low, high = np.percentile(image, [1, 99.5])
            axes.imshow(
                image,
                cmap='gray',
                origin='lower',
                vmin=low,
                vmax=high,
                aspect='equal',
                interpolation='nearest',
                # Fourier sections in cycles/voxel, so that the wedge shows its true
                # angle whatever the box's proportions (slices: one pixel per voxel).
                extent=(-0.5, 0.5, -0.5, 0.5) if column >= 2 else None,
            )
            if row == 0:  # column titles once, the volume's name at the start of its row
                axes.set_title(label, fontsize=10)
            if column == 0:
                axes.set_ylabel(title, fontsize=11)
            if column < 2:
                axes.set_xlabel(positions[column], fontsize=8)
            axes.set_xticks([])
            axes.set_yticks([])
    figure.tight_layout()
    return figure


# --------------------------------------------------------------- real vs simulated
def radialPowerSpectrum(volume, voxelSize, side=FOURIER_SIDE, bins=40):
    """(spatial frequency in 1/A, mean power) of the standardised central cube, averaged
    over spherical shells up to Nyquist: comparable between different voxel sizes."""
    cube = _apodized(_centralCube(volume, side))
    power = np.abs(np.fft.fftshift(np.fft.fftn(cube))) ** 2
    grids = np.meshgrid(*[np.fft.fftshift(np.fft.fftfreq(n)) for n in cube.shape], indexing='ij')
    radius = np.sqrt(sum(g**2 for g in grids))  # cycles per voxel
    edges = np.linspace(0, 0.5, bins + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    inside = (which >= 0) & (which < bins)
    total = np.bincount(which[inside], weights=power.ravel()[inside], minlength=bins)
    count = np.bincount(which[inside], minlength=bins)
    centres = (edges[:-1] + edges[1:]) / 2 / voxelSize
    return centres, total / np.maximum(count, 1)


def plotRealVsSimulated(real, realVoxelSize, simulated, simulatedVoxelSize, figure=None):
    """Intensity histograms and radial power spectra of a real and a simulated tomogram,
    both standardised: a simulation that learned the data matches both curves."""
    figure = newFigure(figure, (11, 4))
    histogram = figure.add_subplot(1, 2, 1)
    spectrum = figure.add_subplot(1, 2, 2)
    for volume, voxelSize, label in (
        (real, realVoxelSize, 'real'),
        (simulated, simulatedVoxelSize, 'simulated'),
    ):
        values = np.asarray(volume, dtype=np.float32).ravel()
        values = (values - values.mean()) / (values.std() or 1.0)
        histogram.hist(values, bins=100, range=(-5, 5), density=True, histtype='step', label=label)
        frequency, power = radialPowerSpectrum(volume, voxelSize)
        spectrum.semilogy(frequency, power, label=label)
    histogram.set_title('Intensities (standardised)', fontsize=10)
    histogram.set_xlabel('standard deviations')
    histogram.set_ylabel('density')
    histogram.legend()
    spectrum.set_title('Radial power spectrum', fontsize=10)
    spectrum.set_xlabel('spatial frequency (1/A)')
    spectrum.set_ylabel('mean power')
    spectrum.legend()
    figure.tight_layout()
    return figure
