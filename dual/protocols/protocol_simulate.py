import os
from enum import Enum

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow import BETA
from pyworkflow.object import Pointer, Set
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import (
    Coordinate3D,
    SetOfCoordinates3D,
    SetOfTomograms,
    SetOfTomoMasks,
    Tomogram,
    TomoMask,
)

from dual.contract import engine, sentence
from dual.convert import convertPositions
from dual.protocols.protocol_base import ProtDualApplyModel

SIM_TAG = '_sim'


class SimulateOutputs(Enum):
    tomograms = SetOfTomograms
    labels = SetOfTomoMasks
    coordinates = SetOfCoordinates3D


class ProtDualSimulate(ProtDualApplyModel):
    """Simulates realistic tomograms from clean density maps with a trained DUAL model.

    The model adds what it learned from the real tomograms. Noise model "fitted" (the
    default): the map through the structural generator's linear response (CTF, missing
    wedge) plus stationary noise with the real tomograms' spectrum, both fitted when
    training ended. "learned" (the paper's): noise drawn from a random noise code, then
    the structural generator.
    Each map gives N synthetic tomograms (tsIds <tsId>_sim00, _sim01...) on the map's
    own grid and voxel size. With label masks of the maps (e.g. class masks of grand
    models) and particle coordinates in them (e.g. the phantoms' true coordinates),
    each synthetic tomogram gets its labels and coordinates too: ready-made training
    data for a segmentation or picking network.
    """

    _label = 'simulate tomograms'
    _network = 'simulator'
    _devStatus = BETA
    _possibleOutputs = SimulateOutputs
    _inputName = 'inputMaps'

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.labelItems = None
        self.coordinateItems = None

    # --------------------------- form ------------------------------------
    def _defineParams(self, form):
        self._defineModelInput(form)
        form.addParam(
            'inputMaps',
            params.PointerParam,
            pointerClass='SetOfTomograms,SetOfVolumes',
            important=True,
            label='Clean density maps',
            help='Noise-free density maps to turn into tomograms: grand models '
            '(e.g. "dual - simulate phantoms"), maps built from atomic '
            'models, or high-SNR tomograms.',
        )
        form.addParam(
            'inputLabels',
            params.PointerParam,
            pointerClass='SetOfTomoMasks',
            allowsNull=True,
            label='Label masks of the maps (optional)',
            help='One mask per map, matched by tsId and on the same grid. Each '
            'synthetic tomogram is output with its map\'s mask.',
        )
        form.addParam(
            'inputCoordinates',
            params.PointerParam,
            pointerClass='SetOfCoordinates3D',
            allowsNull=True,
            label='Particle coordinates in the maps (optional)',
            help='Coordinates on tomograms with the maps\' tsIds (the maps themselves, '
            'or tomograms on the same grid, such as the phantoms\' tomograms; any voxel '
            'size: positions go through the physical frame). Each synthetic tomogram '
            'gets its map\'s coordinates, with their orientations, scores and groups.',
        )
        form.addParam(
            'variants',
            params.IntParam,
            default=1,
            validators=[params.Positive],
            label='Tomograms per map',
            help='Synthetic tomograms drawn per map, each with its own noise.',
        )
        form.addParam(
            'noiseModel',
            params.EnumParam,
            choices=list(engine.NOISE_MODELS),
            default=engine.NOISE_MODELS.index(engine.DEFAULT_NOISE_MODEL),
            display=params.EnumParam.DISPLAY_HLIST,
            label='Noise model',
            help=sentence(engine.NOISE_MODEL_HELP)
            + ' Fitted tomograms are much harder to tell from real ones (see the '
            'plugin\'s README, realism benchmark); models trained by earlier versions '
            'have only the learned one.',
        )
        form.addParam(
            'seed',
            params.IntParam,
            default=0,
            label='Random seed',
            help='The same seed gives the same tomograms.',
        )
        self._defineRunParams(form)

    # --------------------------- steps -----------------------------------
    def _engineCommand(self):
        return 'simulate'

    def _engineJob(self, name, gpus):
        job = super()._engineJob(name, gpus)
        # Map i of the set draws the engine's streams (seed, map i, variant): its own noise,
        # whichever step simulates it.
        job.update(
            variants=self.variants.get(),
            noise_model=self._noiseModel(),
            seed=self.seed.get(),
            first_index=list(self.inputItems).index(name),
        )
        return job

    def _noiseModel(self):
        return engine.NOISE_MODELS[self.noiseModel.get()]

    def _simulatedName(self, name, variant):
        """tsId and file stem of a synthetic tomogram: the engine's output name for the
        input extra/inputs/<name>.mrc, without .mrc."""
        return os.path.splitext(engine.simulated_name(self._engineInputPath(name), variant))[0]

    def getMapFile(self, simulatedTsId):
        """The map a synthetic tomogram was simulated from (for the viewers)."""
        return self.getInputFile(simulatedTsId.rsplit(SIM_TAG, 1)[0])

    def _initialize(self):
        super()._initialize()
        self.labelItems = self._labelsByName()
        self.coordinateItems = self._coordinatesByName()

    def _labelsByName(self):
        """{tsId: label mask} of the optional label input."""
        labels = self.inputLabels.get()
        return {} if labels is None else {m.getTsId(): m.clone() for m in labels.iterItems()}

    def _coordinatesByName(self):
        """{tsId: (its tomogram, [(x, y, z, matrix, score, group)])} of the optional
        coordinates, positions in BOTTOM_LEFT_CORNER voxels of that tomogram."""
        coords = self.inputCoordinates.get()
        if coords is None:
            return {}
        byName = {}
        for coord in coords.iterCoordinates():
            tomogram, points = byName.setdefault(coord.getTomoId(), (coord.getVolume().clone(), []))
            points.append(
                coord.getPosition(BOTTOM_LEFT_CORNER)
                + (np.array(coord.getMatrix()), coord.getScore(), coord.getGroupId())
            )
        return byName

    @staticmethod
    def _followingCoordinates(source, points, tomo):
        """Coordinates on synthetic tomogram `tomo` at the same points as `points` in
        tomogram `source` (its map, or a tomogram on the map's grid), with their
        orientation, score and group."""
        positions = convertPositions([p[:3] for p in points], source, tomo)
        for (x, y, z), (_, _, _, matrix, score, group) in zip(positions, points):
            coord = Coordinate3D()
            coord.setVolume(tomo)  # before setPosition: it needs the origin
            coord.setPosition(x, y, z, BOTTOM_LEFT_CORNER)
            coord.setMatrix(matrix)
            if score is not None:
                coord.setScore(score)
            if group is not None:
                coord.setGroupId(group)
            yield coord

    def _getCoordinatesSet(self):
        """The streaming coordinates on the synthetic tomograms, created on first use
        (after the tomograms). Call under self._lock."""
        name = SimulateOutputs.coordinates.name
        outSet = getattr(self, name, None)
        if outSet is not None:
            outSet.enableAppend()
            return outSet
        inputCoords, maps = self.inputCoordinates.get(), self._getInputSet()
        outSet = SetOfCoordinates3D.create(self._getPath(), prefix=name)
        outSet.setPrecedents(Pointer(self, extended=SimulateOutputs.tomograms.name))
        outSet.setSamplingRate(maps.getSamplingRate())
        outSet.setBoxSize(
            int(
                round(
                    inputCoords.getBoxSize()
                    * inputCoords.getSamplingRate()
                    / maps.getSamplingRate()
                )
            )
        )
        outSet.setStreamState(Set.STREAM_OPEN)
        self._defineOutputs(**{name: outSet})
        self._defineSourceRelation(self.inputCoordinates, outSet)
        return outSet

    def createOutputStep(self, name):
        inMap = self.inputItems[name]
        mask = self.labelItems.get(name)
        labelFile = self._copyWithSamplingRate(mask, '%s_labels' % name) if mask else None
        tomograms, masks = [], []
        for variant in range(self.variants.get()):
            simName = self._simulatedName(name, variant)
            tomo = self._syntheticTomogram(inMap, simName)
            tomograms.append(tomo)
            if labelFile:
                labels = TomoMask()
                labels.copyInfo(tomo)
                labels.setFileName(labelFile)
                labels.setVolName(tomo.getFileName())
                masks.append(labels)
        with self._lock:
            outSet = self._getOutputSet(SimulateOutputs.tomograms.name, SetOfTomograms)
            for tomo in tomograms:
                self._appendToOutput(outSet, tomo)
            self._store(outSet)
            if name in self.coordinateItems:
                source, points = self.coordinateItems[name]
                coordSet = self._getCoordinatesSet()
                for tomo in tomograms:
                    for coord in self._followingCoordinates(source, points, tomo):
                        coordSet.append(coord)
                coordSet.write()
                self._store(coordSet)
            if masks:
                maskSet = self._getOutputSet(SimulateOutputs.labels.name, SetOfTomoMasks)
                for labels in masks:
                    self._appendToOutput(maskSet, labels)
                self._store(maskSet)

    def _syntheticTomogram(self, inMap, simName):
        """A synthetic tomogram on the map's grid: its voxel size, origin and (for a
        tomogram) acquisition; a tsId of its own and no half maps."""
        fileName = self._getExtraPath('%s.mrc' % simName)
        self._setHeaderSamplingRate(fileName, inMap.getSamplingRate())
        tomo = Tomogram(location=fileName)
        tomo.setSamplingRate(inMap.getSamplingRate())
        tomo.setTsId(simName)
        if inMap.hasOrigin():
            tomo.setOrigin(inMap.getOrigin())
        else:
            tomo.setOrigin()
        if isinstance(inMap, Tomogram) and inMap.getAcquisition() is not None:
            tomo.setAcquisition(inMap.getAcquisition().clone())
        return tomo

    # --------------------------- info ------------------------------------
    def _validate(self):
        errors = super()._validate() + self._noiseModelErrors()
        maps = self._getInputSet()
        if maps is None or maps.getSize() == 0:
            return errors
        return errors + self._labelErrors(maps) + self._coordinateErrors(maps)

    def _noiseModelErrors(self):
        model = self.inputModel.get()
        if model is None or self._noiseModel() in model.getNoiseModels():
            return []
        return [
            'The model has no %s noise model (it was trained by an earlier version): '
            'choose the noise model "learned", or train the model again.' % self._noiseModel()
        ]

    def _coordinateErrors(self, maps):
        coords = self.inputCoordinates.get()
        if coords is None:
            return []
        if not isinstance(maps, SetOfTomograms):
            return [
                'Particle coordinates are matched to the maps by tsId: give the maps as '
                'tomograms (plain volumes have no tsId).'
            ]
        mapIds = {m.getTsId() for m in maps.iterItems()}
        coordIds = {t.getTsId() for t in coords.getPrecedents().iterItems()}
        if not mapIds & coordIds:
            return [
                'Particle coordinates: none of their tomograms (%s) has the tsId of a map '
                '(%s).' % (', '.join(sorted(coordIds)), ', '.join(sorted(mapIds)))
            ]
        return []

    def _labelErrors(self, maps):
        labels = self.inputLabels.get()
        if labels is None:
            return []
        errors = self._setErrors(labels, 'Label masks')
        if not isinstance(maps, SetOfTomograms):
            return errors + [
                'Label masks are matched to the maps by tsId: give the maps as '
                'tomograms (plain volumes have no tsId).'
            ]
        masks = self._labelsByName()
        for inMap in maps.iterItems():
            mask = masks.get(inMap.getTsId())
            if mask is None:
                errors.append('Label masks: there is no mask with tsId %s.' % inMap.getTsId())
            elif mask.getDim() != inMap.getDim():
                errors.append(
                    'Label masks: the mask of %s is %s voxels, its map %s.'
                    % (
                        inMap.getTsId(),
                        'x'.join(map(str, mask.getDim())),
                        'x'.join(map(str, inMap.getDim())),
                    )
                )
        return errors

    def _summary(self):
        if self.inputModel.get() is None or self._getInputSet() is None:
            return []
        outSet = getattr(self, SimulateOutputs.tomograms.name, None)
        lines = [
            '%d synthetic tomograms (%d per map, seed %d, %s noise) from %d maps with %s.'
            % (
                outSet.getSize() if outSet is not None else 0,
                self.variants.get(),
                self.seed.get(),
                self._noiseModel(),
                self._getInputSet().getSize(),
                self._modelDescription(),
            )
        ]
        if self.inputLabels.get() is not None:
            lines.append(
                'Each synthetic tomogram has its map\'s label mask (output %s).'
                % SimulateOutputs.labels.name
            )
        coords = getattr(self, SimulateOutputs.coordinates.name, None)
        if coords is not None:
            lines.append(
                '%d coordinates follow their maps onto the synthetic tomograms (output %s).'
                % (coords.getSize(), SimulateOutputs.coordinates.name)
            )
        return lines

    def _methods(self):
        if self.inputModel.get() is None or self._getInputSet() is None:
            return []
        maps = self._getInputSet()
        if self._noiseModel() == 'fitted':
            how = (
                'with the fitted noise model of its trained model: each map was filtered '
                'by the linear response of DUAL\'s structural generator, scaled to the '
                'share of structure that generator gives each spatial frequency of the '
                'training tomograms, and stationary Gaussian noise with the rest of their '
                'power spectrum was added (spectra binned by frequency and by angle to '
                'the missing wedge), %d draws per map (random seed %d), at the model\'s '
                'voxel size, and the result resampled to the map\'s grid.'
                % (self.variants.get(), self.seed.get())
            )
        else:
            how = (
                'with its generators: for each map, %d noise codes were drawn (random '
                'seed %d), the decoded non-structural noise was added and the structural '
                'generator applied, in overlapping tiles of %d voxels at the model\'s '
                'voxel size, and the result resampled to the map\'s grid.'
                % (self.variants.get(), self.seed.get(), self.tileSize.get())
            )
        return [
            'We simulated %d tomograms from %d noise-free density maps (%.2f A/voxel) with '
            'DUAL [Zeng2023DUAL], using %s, %s'
            % (
                maps.getSize() * self.variants.get(),
                maps.getSize(),
                maps.getSamplingRate(),
                self._modelDescription(),
                how,
            )
            + self._labelsMethodsText()
        ]

    def _labelsMethodsText(self):
        """What the methods say of the labels that follow the maps, if any."""
        given = [
            what
            for what, pointer in (
                ('label masks', self.inputLabels),
                ('particle coordinates', self.inputCoordinates),
            )
            if pointer.get() is not None
        ]
        if not given:
            return ''
        return (
            ' The synthetic tomograms lie on their maps\' grids, so the maps\' %s were '
            'carried over unchanged as their labels.' % ' and '.join(given)
        )
