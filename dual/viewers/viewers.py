"""Viewers of the DUAL protocols: training curves, before/after slices with their
Fourier amplitudes, and real-vs-simulated statistics. The drawing is in plots.py."""

import os

import pyworkflow.protocol.params as params
from pwem.viewers import EmPlotter
from pyworkflow.viewer import DESKTOP_TKINTER, ProtocolViewer, Viewer

from dual.convert import readTrainingLog
from dual.protocols import ProtDualDenoise, ProtDualSimulate, ProtDualTrain, ProtDualWedge
from dual.protocols.protocol_denoise import DenoiseOutputs
from dual.protocols.protocol_simulate import SimulateOutputs
from dual.protocols.protocol_wedge import WedgeOutputs
from dual.viewers import plots


def _plotter(draw, *args, windowTitle='', **options):
    """An EmPlotter (a non-blocking View) whose figure `draw(*args, figure=..., **options)`
    fills."""
    plotter = EmPlotter(windowTitle=windowTitle)
    draw(*args, figure=plotter.getFigure(), **options)
    return plotter


class DualTrainingViewer(Viewer):
    """The losses of a DUAL training against the iteration (also while it runs)."""

    _label = 'training curves'
    _targets = [ProtDualTrain, ProtDualWedge]
    _environments = [DESKTOP_TKINTER]

    def _visualize(self, protocol, **kwargs):
        records = readTrainingLog(protocol.getTrainingLogFile())
        if not records:
            return [
                self.infoMessage(
                    'No training has logged any iteration (yet) in this run.',
                    'DUAL training curves',
                )
            ]
        return [_plotter(plots.plotTrainingCurves, records, windowTitle='DUAL training curves')]


class DualVolumesViewer(ProtocolViewer):
    """Base of the viewers of the protocols that output tomograms: pick one, compare it
    with the volume it came from."""

    _environments = [DESKTOP_TKINTER]
    _outputName = None

    def _outputTsIds(self):
        outSet = getattr(self.protocol, self._outputName, None)
        return [] if outSet is None else sorted(outSet.getTSIds())

    def _defineChoice(self, form, label):
        form.addSection(label='Visualization')
        form.addParam(
            'tomogram',
            params.EnumParam,
            choices=self._outputTsIds() or ['(none yet)'],
            default=0,
            display=params.EnumParam.DISPLAY_COMBO,
            label=label,
        )
        line = form.addLine(
            'Slice positions (%)',
            help='Where the XY slice (z, % of the depth) and the XZ slice (y, % of the '
            'height) cut each volume: 50 is the central slice. The same relative position '
            'in volumes of different sizes. To browse every slice, open the output in the '
            'tomogram viewer below.',
        )
        line.addParam('zPercent', params.FloatParam, default=50.0, label='z')
        line.addParam('yPercent', params.FloatParam, default=50.0, label='y')
        form.addParam(
            'showInTomoViewer',
            params.LabelParam,
            label='All output tomograms in the tomogram viewer (every slice; IMOD, napari...)',
        )

    def _slicePositions(self):
        """zFraction and yFraction for plots.plotSlicesAndSpectra (clipped to the volume)."""
        return dict(
            zFraction=min(1.0, max(0.0, (self.zPercent.get() or 0.0) / 100.0)),
            yFraction=min(1.0, max(0.0, (self.yPercent.get() or 0.0) / 100.0)),
        )

    def _getVisualizeDict(self):
        return {'showInTomoViewer': self._showInTomoViewer}

    def _showInTomoViewer(self, paramName=None):
        """The output set handed to scipion-em-tomo's viewer, as its right-click menu
        does: a list of the tomograms, each opened with the slice viewers installed."""
        outSet = getattr(self.protocol, self._outputName, None)
        if outSet is None:
            return self._noOutput()
        from tomo.viewers.views_tkinter_tree import TomoObjectDialogView  # Tk: only here

        return [TomoObjectDialogView(self.getTkRoot(), self.protocol, outSet)]

    def _chosenTsId(self):
        tsIds = self._outputTsIds()
        return tsIds[self.tomogram.get()] if tsIds else None

    def _outputFile(self, tsId):
        outSet = getattr(self.protocol, self._outputName)
        for item in outSet.iterItems(where='_tsId="%s"' % tsId):
            return item.getFileName()

    def _slicesView(self, before, beforeTitle, after, afterTitle, windowTitle):
        (beforeVolume, _), (afterVolume, _) = plots.readVolume(before), plots.readVolume(after)
        return _plotter(
            plots.plotSlicesAndSpectra,
            [beforeVolume, afterVolume],
            [beforeTitle, afterTitle],
            windowTitle=windowTitle,
            **self._slicePositions(),
        )

    def _noOutput(self):
        return [self.infoMessage('There is no output tomogram yet.', self._label)]


class DualBeforeAfterViewer(DualVolumesViewer):
    """Base of the viewers that compare each output tomogram with its input."""

    _afterTitle = None
    _windowTitle = None

    def _defineParams(self, form):
        self._defineChoice(form, 'Tomogram (tsId)')
        form.addParam(
            'showBeforeAfter',
            params.LabelParam,
            label='Slices and Fourier amplitudes, before and after',
        )

    def _getVisualizeDict(self):
        return dict(
            DualVolumesViewer._getVisualizeDict(self), showBeforeAfter=self._showBeforeAfter
        )

    def _showBeforeAfter(self, paramName=None):
        tsId = self._chosenTsId()
        if tsId is None:
            return self._noOutput()
        return [
            self._slicesView(
                self.protocol.getInputFile(tsId),
                'input',
                self._outputFile(tsId),
                self._afterTitle,
                '%s: %s' % (self._windowTitle, tsId),
            )
        ]


class DualDenoiseViewer(DualBeforeAfterViewer):
    """Central slices and Fourier amplitudes of a tomogram before and after denoising."""

    _label = 'before / after denoising'
    _targets = [ProtDualDenoise]
    _outputName = DenoiseOutputs.tomograms.name
    _afterTitle = 'denoised'
    _windowTitle = 'DUAL denoising'


class DualSimulateViewer(DualVolumesViewer):
    """A synthetic tomogram next to its clean map, and next to a real tomogram of the
    model's training data (intensity and power-spectrum statistics)."""

    _label = 'map / synthetic / real tomograms'
    _targets = [ProtDualSimulate]
    _outputName = SimulateOutputs.tomograms.name

    def _defineParams(self, form):
        self._defineChoice(form, 'Synthetic tomogram (tsId)')
        form.addParam(
            'showMapVsSynthetic',
            params.LabelParam,
            label='Slices and Fourier amplitudes: clean map vs synthetic',
        )
        form.addParam(
            'showRealVsSynthetic',
            params.LabelParam,
            label='Real (model\'s training data) vs synthetic',
        )

    def _getVisualizeDict(self):
        return dict(
            DualVolumesViewer._getVisualizeDict(self),
            showMapVsSynthetic=self._showMapVsSynthetic,
            showRealVsSynthetic=self._showRealVsSynthetic,
        )

    def _showMapVsSynthetic(self, paramName=None):
        tsId = self._chosenTsId()
        if tsId is None:
            return self._noOutput()
        return [
            self._slicesView(
                self.protocol.getMapFile(tsId),
                'clean map',
                self._outputFile(tsId),
                'synthetic',
                'DUAL simulation: %s' % tsId,
            )
        ]

    def _realTomogramFile(self):
        """The first noisy tomogram the model was trained on that is still on disk."""
        noisy = self.protocol.inputModel.get().getTrainingInfo().get('noisy_volumes') or []
        return next((path for path in noisy if os.path.exists(path)), None)

    def _showRealVsSynthetic(self, paramName=None):
        tsId, real = self._chosenTsId(), self._realTomogramFile()
        if tsId is None:
            return self._noOutput()
        if real is None:
            return [
                self.infoMessage(
                    'None of the tomograms the model was trained on is available here.', self._label
                )
            ]
        (realVolume, realVoxel), (synthetic, syntheticVoxel) = (
            plots.readVolume(real),
            plots.readVolume(self._outputFile(tsId)),
        )
        title = 'DUAL simulation: real vs %s' % tsId
        return [
            _plotter(
                plots.plotSlicesAndSpectra,
                [realVolume, synthetic],
                ['real', 'synthetic'],
                windowTitle=title,
                **self._slicePositions(),
            ),
            _plotter(
                plots.plotRealVsSimulated,
                realVolume,
                realVoxel,
                synthetic,
                syntheticVoxel,
                windowTitle=title,
            ),
        ]


class DualWedgeViewer(DualBeforeAfterViewer):
    """Central XY and XZ slices and Fourier sections of a tomogram before and after
    missing-wedge compensation: the XZ Fourier section shows the cone being filled."""

    _label = 'before / after missing-wedge compensation'
    _targets = [ProtDualWedge]
    _outputName = WedgeOutputs.tomograms.name
    _afterTitle = 'compensated'
    _windowTitle = 'DUAL missing wedge'
