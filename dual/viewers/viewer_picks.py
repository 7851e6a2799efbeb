"""Picks of "dual - pick particles" drawn on tomogram slices.

plotPicks draws from arrays into a matplotlib Figure (testable headless); the viewer
reads the files, chooses the slab and shows the figure through a pwem EmPlotter,
which does not block the GUI.
"""

import math
import os

import matplotlib
import mrcfile
import numpy as np
import pyworkflow.protocol.params as params
from matplotlib import colors
from matplotlib.cm import ScalarMappable
from matplotlib.patches import Circle
from pwem.viewers import EmPlotter
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer
from tomo.constants import BOTTOM_LEFT_CORNER

from dual.protocols import ProtDualPick
from dual.protocols.protocol_base import itemKey
from dual.contract import engine
from dual.protocols.protocol_pick import PickOutputs
from dual.viewers.plots import newFigure

SHOW_PICKED, SHOW_OUTPUT = 0, 1
SCORE_COLORMAP = 'plasma'


def slabRange(depth, sliceIndex=None, thickness=1):
    """(first, last + 1) of the `thickness` slices centred on `sliceIndex` (default:
    the central slice), clipped to a volume `depth` slices deep."""
    centre = depth // 2 if sliceIndex is None or sliceIndex < 0 else min(int(sliceIndex), depth - 1)
    thickness = max(1, int(thickness))
    first = max(0, centre - (thickness - 1) // 2)
    return first, min(depth, first + thickness)


def plotPicks(
    volume, xyz, scores, sliceIndex=None, thickness=1, radius=5.0, figure=None, title=None
):
    """An XY view of `volume` ([z, y, x]) with the picks drawn as circles coloured by score.

    The image is the mean of `thickness` slices centred on z = sliceIndex (default:
    the central slice; -1 too). xyz: (x, y, z) voxels, 0-based (the engine's picks
    table, BOTTOM_LEFT_CORNER pixels); radius: particle radius in voxels. A pick at
    distance dz from the slice is drawn with the radius of its sphere's cross-section,
    sqrt(radius^2 - dz^2), so circles shrink away from the particle centre; picks
    further than `radius` are not drawn. Colours span the scores of all picks, so they
    compare between slices. A second panel shows the histogram of all the scores
    (to choose a threshold). Returns the figure (a new one unless given).
    `volume` may be a memory map: only the slices shown are read.
    """
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    figure = newFigure(figure, (11, 6))
    first, last = slabRange(volume.shape[0], sliceIndex, thickness)
    image = np.asarray(volume[first:last], dtype=np.float32).mean(axis=0)
    zCentre = 0.5 * (first + last - 1)

    grid = figure.add_gridspec(1, 2, width_ratios=[3, 1])
    axes = figure.add_subplot(grid[0, 0])
    low, high = np.percentile(image, [1, 99]) if image.size else (0, 1)
    axes.imshow(image, cmap='gray', origin='lower', vmin=low, vmax=high, interpolation='nearest')
    norm = colors.Normalize(
        vmin=float(scores.min()) if len(scores) else 0.0,
        vmax=float(scores.max()) if len(scores) else 1.0,
    )
    if norm.vmin == norm.vmax:
        norm = colors.Normalize(vmin=norm.vmin - 0.5, vmax=norm.vmax + 0.5)
    colormap = matplotlib.colormaps[SCORE_COLORMAP]
    shown = 0
    # Worst first, so the best picks are drawn on top.
    for index in np.argsort(scores, kind='stable'):
        x, y, z = xyz[index]
        dz = abs(z - zCentre)
        if dz >= radius:
            continue
        axes.add_patch(
            Circle(
                (x, y),
                math.sqrt(radius**2 - dz**2),
                fill=False,
                lw=1.5,
                edgecolor=colormap(norm(scores[index])),
            )
        )
        shown += 1
    axes.set_xlim(-0.5, image.shape[1] - 0.5)
    axes.set_ylim(-0.5, image.shape[0] - 0.5)
    axes.set_xlabel('x (voxels)')
    axes.set_ylabel('y (voxels)')
    slab = 'z = %d' % first if last - first == 1 else 'z = %d-%d' % (first, last - 1)
    axes.set_title(
        '%s%s: %d of %d picks' % (title + ', ' if title else '', slab, shown, len(scores)),
        fontsize=10,
    )
    mappable = ScalarMappable(norm=norm, cmap=colormap)
    mappable.set_array([])
    figure.colorbar(mappable, ax=axes, fraction=0.046, pad=0.04, label='score')

    hist = figure.add_subplot(grid[0, 1])
    if len(scores):
        hist.hist(scores, bins=min(50, max(5, len(scores) // 5)), color='0.4')
    hist.set_xlabel('score')
    hist.set_ylabel('picks')
    hist.set_title('all picks', fontsize=10)
    figure.tight_layout()
    return figure


class DualPicksViewer(ProtocolViewer):
    """The picks of a tomogram drawn on its slices, coloured by score, with the
    histogram of the scores."""

    _label = 'picks on tomogram slices'
    _targets = [ProtDualPick]
    _environments = [DESKTOP_TKINTER]

    def _tomogramKeys(self):
        inputSet = self.protocol.inputTomograms.get()
        return [] if inputSet is None else [itemKey(t) for t in inputSet.iterItems(orderBy='id')]

    def _defineParams(self, form):
        form.addSection(label='Visualization')
        form.addParam(
            'tomogram',
            params.EnumParam,
            choices=self._tomogramKeys() or ['(none)'],
            default=0,
            display=params.EnumParam.DISPLAY_COMBO,
            label='Tomogram (tsId)',
        )
        form.addParam(
            'volume',
            params.EnumParam,
            choices=['picked tomogram', 'tomogram of the coordinates'],
            default=SHOW_PICKED,
            display=params.EnumParam.DISPLAY_HLIST,
            label='Draw on',
            help='picked tomogram: the volume the picker saw, with its picks '
            '(also while the protocol runs).\n'
            'tomogram of the coordinates: the output coordinates on the '
            'tomograms they refer to (the originals when given).',
        )
        form.addParam(
            'sliceIndex',
            params.IntParam,
            default=-1,
            label='Z slice',
            help='Central slice of the view; -1: the middle of the tomogram.',
        )
        form.addParam(
            'thickness',
            params.IntParam,
            default=5,
            label='Slices averaged',
            help='Number of slices averaged around the chosen one (more: less noise).',
        )
        form.addParam('showPicks', params.LabelParam, label='Show the picks')

    def _getVisualizeDict(self):
        return {'showPicks': self._showPicks}

    def _showPicks(self, paramName=None):
        keys = self._tomogramKeys()
        if not keys:
            return [self.infoMessage('The protocol has no input tomograms.', self._label)]
        key = keys[min(self.tomogram.get(), len(keys) - 1)]
        if self.volume.get() == SHOW_PICKED:
            found = self._pickedPicks(key)
        else:
            found = self._outputPicks(key)
        if isinstance(found, str):
            return [self.infoMessage(found, self._label)]
        path, xyz, scores, samplingRate = found
        radius = 0.5 * self.protocol.particleDiameter.get() / samplingRate
        plotter = EmPlotter(windowTitle='DUAL picks: %s' % key)
        with mrcfile.mmap(path.split(':')[0], mode='r', permissive=True) as mrc:
            plotPicks(
                mrc.data,
                xyz,
                scores,
                sliceIndex=self.sliceIndex.get(),
                thickness=self.thickness.get(),
                radius=radius,
                figure=plotter.getFigure(),
                title=key,
            )
        return [plotter]

    def _pickedPicks(self, key):
        """(volume file, xyz, scores, A/px) of the engine's picks, or a message."""
        table = self.protocol.getPicksFile(key)
        if not os.path.exists(table):
            return '%s has not been picked yet.' % key
        xyz, scores = engine.read_picks_table(table)
        tomo = next(t for t in self.protocol.inputTomograms.get().iterItems() if itemKey(t) == key)
        picked = self.protocol.getPickedFile(key)  # what the engine read (MRC)
        return (
            picked if os.path.exists(picked) else tomo.getFileName(),
            xyz,
            scores,
            tomo.getSamplingRate(),
        )

    def _outputPicks(self, key):
        """(volume file, xyz, scores, A/px) of the output coordinates, or a message."""
        outSet = getattr(self.protocol, PickOutputs.coordinates.name, None)
        if outSet is None:
            return 'There are no output coordinates yet.'
        precedents = outSet.getPrecedents()
        tomo = next((t for t in precedents.iterItems() if itemKey(t) == key), None)
        if tomo is None:
            return 'No tomogram %s among the tomograms of the coordinates.' % key
        positions, scores = [], []
        for coord in outSet.iterCoordinates(volume=tomo):
            positions.append(coord.getPosition(BOTTOM_LEFT_CORNER))
            scores.append(coord.getScore())
        return (
            tomo.getFileName(),
            np.array(positions).reshape(-1, 3),
            np.array(scores),
            tomo.getSamplingRate(),
        )
