"""Template-free particle picking (DUAL's Difference-of-Gaussians picker) whose
coordinates feed subtomogram averaging in RELION, Dynamo and the rest of Scipion.

Coordinates: the engine writes, per tomogram, extra/<tsId>/<tsId>_picks.tsv with
x y z score in voxels of the picked tomogram, 0-based, the integer position being
the centre of voxel [z, y, x]. That is Scipion's BOTTOM_LEFT_CORNER pixel
convention, so the positions go through Coordinate3D.setPosition(..., BOTTOM_LEFT_CORNER)
unchanged when the coordinates refer to the picked tomograms.

When they refer to other tomograms (the "original tomograms", e.g. the raw ones a
denoised set came from, possibly at another voxel size), each position goes through
Scipion's physical frame: Coordinate3D stores a position p (BOTTOM_LEFT_CORNER pixels
of tomogram T) as p + o_T / s_T, with o_T the origin shifts of T (getShiftsFromOrigin,
Angstrom, -n/2 * s_T by default) and s_T its sampling rate; in Angstrom that is
p * s_T + o_T. The same point in tomogram U is therefore

    p_U = (p_T * s_T + o_T - o_U) / s_U

which is p_T when T and U share voxel size and origin, and 2 p_T for a tomogram
binned 2x with default (centred) origins on both sides.
"""
import math
import os
import re
from enum import Enum

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow import BETA
from pyworkflow.object import Set, String
from pyworkflow.protocol import STEPS_PARALLEL, Protocol
from pyworkflow.utils import Message
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import Coordinate3D, SetOfCoordinates3D
from tomo.protocols import ProtTomoPicking

from dual.protocols.protocol_base import ProtDualBase, itemKey

# Polarity choices of the form; AUTO resolves to DARK or BRIGHT (see _polarityHelp).
POLARITY_AUTO, POLARITY_DARK, POLARITY_BRIGHT = 0, 1, 2
POLARITY_CHOICES = ['auto', 'dark', 'bright']
# Protocols whose output tomograms show particles brighter than the background:
# DUAL's denoiser maps tomograms to the clean-density domain (dense = bright), and the
# engine's phantoms are simulated with dense = bright. Anything else is taken as a raw
# cryo-ET reconstruction (dense = dark). Class names, so nothing is imported for it.
BRIGHT_PRODUCERS = ('ProtDualDenoise', 'ProtDualPhantom')

SELECT_TOP, SELECT_THRESHOLD = 0, 1

# Engine limits, repeated here so that _validate can reject input early (the plugin
# never imports the engine): a particle must span at least this many voxels.
MIN_DIAMETER_VOXELS = 2.0
PICKS_SUFFIX = '_picks.tsv'
# A picked and an original tomogram of one tsId should span the same physical size;
# beyond this many original voxels apart, _warnings flags the pair.
EXTENT_TOLERANCE_VOXELS = 4


class PickOutputs(Enum):
    coordinates = SetOfCoordinates3D


# --------------------------------------------------------------------------- helpers
def readPicksTable(path):
    """(xyz [N, 3], scores [N]) of an engine picks table (x y z score, one header line)."""
    with open(path) as f:
        header = f.readline().split()
    if header[:4] != ['x', 'y', 'z', 'score']:
        raise ValueError('%s is not a picks table (header %s)' % (path, ' '.join(header)))
    table = np.loadtxt(path, skiprows=1, ndmin=2)
    if table.size == 0:
        return np.zeros((0, 3)), np.zeros(0)
    return table[:, :3], table[:, 3]


def convertPositions(xyz, fromTomo, toTomo):
    """BOTTOM_LEFT_CORNER pixel positions in `fromTomo` -> the same points in `toTomo`,
    through Scipion's physical frame (origin shifts in A, see the module doc)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    fromShifts = np.array(fromTomo.getShiftsFromOrigin(), dtype=np.float64)
    toShifts = np.array(toTomo.getShiftsFromOrigin(), dtype=np.float64)
    return (xyz * fromTomo.getSamplingRate() + fromShifts - toShifts) / toTomo.getSamplingRate()


def defaultBoxSize(diameter, samplingRate):
    """The particle diameter in pixels, rounded up to an even number."""
    return int(2 * math.ceil(round(diameter / samplingRate / 2.0, 6)))


def engineName(key):
    """The file prefix and rlnTomoName the engine gets for tomogram `key` (its tsId):
    the tsId itself unless a STAR file could not hold it (spaces, a leading _ # or
    quote, data_/loop_), then a close variant."""
    name = re.sub(r'\s+', '_', key)
    if not name or name[0] in '#_\'"' or name.startswith(('data_', 'loop_')):
        name = 'tomo' + name
    return name


class ProtDualPick(ProtTomoPicking, ProtDualBase):
    """Template-free particle picking with DUAL's Difference-of-Gaussians (DoG) picker.

    Each tomogram is filtered with G(sigma1) - G(sigma2), sigma1 = radius / sqrt(3),
    sigma2 = 1.1 sigma1 (the scale at which a ball of the given diameter responds
    most); local maxima closer than a minimum distance to a better one are dropped and
    the best N (or those above a score) are kept. It needs no template and no
    training, and works best on denoised tomograms (e.g. from "dual - denoise").

    Pick on denoised or binned tomograms and hand the coordinates to the original
    tomograms (matched by tsId): positions are converted to the originals' pixels,
    so extraction and averaging in RELION, Dynamo or Scipion work on the originals.
    One step per tomogram, run in parallel; coordinates appear as each one is done.
    """
    _label = 'pick particles'
    _devStatus = BETA
    _possibleOutputs = PickOutputs
    stepsExecutionMode = STEPS_PARALLEL

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pickedItems = None     # {key: picked tomogram}
        self.targetItems = None     # {key: tomogram the coordinates refer to}
        self.maskItems = None       # {key: mask} (empty without masks)
        # The polarity the picks were made with (auto resolved at run time).
        self.usedPolarity = String()

    # --------------------------- form ------------------------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam('inputTomograms', params.PointerParam, pointerClass='SetOfTomograms',
                      important=True, label='Tomograms to pick',
                      help='The tomograms the picker looks at: raw, or better denoised '
                           '(e.g. by "dual - denoise") and/or binned.')
        form.addParam('originalTomograms', params.PointerParam,
                      pointerClass='SetOfTomograms', allowsNull=True,
                      label='Original tomograms (optional)',
                      help='The tomograms the coordinates should refer to, when they are not '
                           'the picked ones: typically the raw tomograms the picked ones '
                           'were denoised from, which subtomogram averaging needs. Matched '
                           'by tsId (every picked tomogram needs one); they may have '
                           'another voxel size (e.g. picking on a 2x binned copy): '
                           'positions are converted through physical coordinates, using '
                           'each tomogram\'s sampling rate and origin.\n'
                           'Empty: the coordinates refer to the picked tomograms.')
        form.addParam('inputMasks', params.PointerParam, pointerClass='SetOfTomoMasks',
                      allowsNull=True, label='Picking masks (optional)',
                      help='Pick only where the mask is above 0.5 (e.g. a cytoplasm or '
                           'membrane segmentation; for a label map, any label). Matched by '
                           'tsId; each mask must have the size of its picked tomogram, '
                           'and every picked tomogram needs one.')

        form.addSection(label='Picking')
        form.addParam('particleDiameter', params.FloatParam, default=None, important=True,
                      label='Particle diameter (A)',
                      help='Largest extent of the particle, in Angstrom (e.g. ~280 for '
                           'ribosomes). It sets the DoG scale, the default minimum '
                           'distance, the default margin and the default box size.')
        form.addParam('polarity', params.EnumParam, choices=POLARITY_CHOICES,
                      default=POLARITY_AUTO, display=params.EnumParam.DISPLAY_HLIST,
                      label='Particle contrast',
                      help='dark: particles darker than the background, as in raw '
                           'cryo-ET reconstructions (protein scatters more than ice; most '
                           'reconstruction software keeps this contrast).\n'
                           'bright: particles brighter than the background, as in '
                           'DUAL-denoised tomograms (the denoiser outputs density, '
                           'dense = bright), density maps, and the DUAL phantoms.\n'
                           'auto (default): bright when the tomograms come from "dual - '
                           'denoise" or "dual - simulate phantoms", dark otherwise. If '
                           'your tomograms were inverted or denoised elsewhere, choose '
                           'explicitly. The summary shows the contrast used.')
        form.addParam('selection', params.EnumParam, choices=['best N', 'score threshold'],
                      default=SELECT_TOP, display=params.EnumParam.DISPLAY_HLIST,
                      label='Keep',
                      help='best N: the N highest-scoring picks of each tomogram.\n'
                           'score threshold: all picks scoring at least the threshold.')
        form.addParam('numberOfPicks', params.IntParam, default=500,
                      condition='selection == %d' % SELECT_TOP,
                      label='Picks per tomogram (N)',
                      help='At most this many picks per tomogram (fewer if the tomogram '
                           'has fewer peaks).')
        form.addParam('scoreThreshold', params.FloatParam, default=0.05,
                      condition='selection == %d' % SELECT_THRESHOLD,
                      label='Score threshold',
                      help='Keep picks whose DoG score is at least this. The score is the '
                           'DoG value at the peak of the tomogram scaled to unit standard '
                           'deviation, so it does not depend on the grey scale but does '
                           'depend on the SNR: denoised tomograms and density maps score '
                           'around 0.1-0.2, raw ones around 0.01-0.03. Run once with best '
                           'N and look at the score histogram in the viewer to choose it.')
        form.addParam('minDistance', params.FloatParam, default=None, allowsNull=True,
                      expertLevel=params.LEVEL_ADVANCED, label='Minimum distance (A)',
                      help='No two picks closer than this (non-maximum suppression: the '
                           'better one is kept). Empty: 24/28 of the diameter (the DUAL '
                           'paper\'s 24 nm for 28 nm ribosomes).')
        form.addParam('margin', params.FloatParam, default=None, allowsNull=True,
                      expertLevel=params.LEVEL_ADVANCED, label='Margin (A)',
                      help='Nothing is picked closer than this to a face of the tomogram '
                           '(particles cut by the border, and the filter\'s border '
                           'artefacts). Empty: the particle radius.')

        form.addSection(label='Output')
        form.addParam('boxSize', params.IntParam, default=None, allowsNull=True,
                      label='Box size (px)',
                      help='Box size stored with the coordinates, in pixels of the '
                           'tomograms they refer to (the originals when given). Empty: the '
                           'particle diameter in those pixels, rounded up to an even '
                           'number. Extraction protocols usually let you change it.')
        form.addParallelSection(threads=3, mpi=0)

    # --------------------------- steps -----------------------------------
    def _insertAllSteps(self):
        self._initialize()
        polarity = self._resolvePolarity()
        self.usedPolarity.set(polarity)
        self._store(self.usedPolarity)
        outputSteps = []
        for index, key in enumerate(self.pickedItems, 1):
            pickId = self._insertFunctionStep(self.pickStep, key, index, polarity,
                                              prerequisites=[], needsGPU=False)
            outputSteps.append(self._insertFunctionStep(self.createOutputStep, key,
                                                        prerequisites=[pickId],
                                                        needsGPU=False))
        self._insertFunctionStep(self.closeOutputStep, prerequisites=outputSteps,
                                 needsGPU=False)

    def _initialize(self):
        self.pickedItems = {itemKey(t): t.clone()
                            for t in self.inputTomograms.get().iterItems(orderBy='id')}
        originals = self._itemsByKey(self.originalTomograms.get())
        self.targetItems = {key: originals.get(key, tomo) if originals else tomo
                            for key, tomo in self.pickedItems.items()}
        self.maskItems = self._itemsByKey(self.inputMasks.get())

    @staticmethod
    def _itemsByKey(inputSet):
        """{tsId: item clone} of a set (empty for None)."""
        if inputSet is None:
            return {}
        return {itemKey(item): item.clone() for item in inputSet.iterItems(orderBy='id')}

    def _picksFile(self, key):
        return self._getExtraPath(engineName(key), engineName(key) + PICKS_SUFFIX)

    def getPicksFile(self, key):
        """The engine's picks table of tomogram `key` (picked tomogram's voxels)."""
        return self._picksFile(key)

    def getPickedFile(self, key):
        """The MRC file the engine picked for tomogram `key` (for the viewer)."""
        return self._engineInputPath(engineName(key))

    def pickStep(self, key, index, polarity):
        tomo = self.pickedItems[key]
        name = engineName(key)
        job = {'tomogram': self._engineInputFile(tomo, name),
               'outdir': os.path.abspath(self._getExtraPath(name)),
               'diameter': self.particleDiameter.get(),
               'polarity': polarity,
               'voxel_size': tomo.getSamplingRate(),
               'tomo_name': name,
               'tomo_index': index,
               'threads': self._engineThreads()}
        if self.selection.get() == SELECT_TOP:
            job['top'] = self.numberOfPicks.get()
        else:
            job['threshold'] = self.scoreThreshold.get()
        if self.minDistance.get() is not None:
            job['min_distance'] = self.minDistance.get()
        if self.margin.get() is not None:
            job['margin'] = self.margin.get()
        if key in self.maskItems:
            job['mask'] = self._engineInputFile(self.maskItems[key], name + '_mask')
        os.makedirs(self._getExtraPath(name), exist_ok=True)
        self.runEngineJob('pick', job, 'pick_%s' % name)

    def createOutputStep(self, key):
        xyz, scores = readPicksTable(self._picksFile(key))
        target = self.targetItems[key]
        positions = convertPositions(xyz, self.pickedItems[key], target)
        with self._lock:
            outSet = self._getOutputSet()
            for (x, y, z), score in zip(positions, scores):
                coord = Coordinate3D()
                coord.setVolume(target)  # before setPosition: it needs the origin
                coord.setPosition(x, y, z, BOTTOM_LEFT_CORNER)
                coord.setScore(float(score))
                outSet.append(coord)
            outSet.write()
            self._store(outSet)

    def closeOutputStep(self):
        self._closeOutputSet()

    def _precedentsPointer(self):
        """The tomograms the coordinates refer to: the originals when given."""
        return self.originalTomograms if self.originalTomograms.get() is not None \
            else self.inputTomograms

    def getBoxSize(self):
        """The box size of the output (px of the tomograms the coordinates refer to)."""
        if self.boxSize.get():
            return self.boxSize.get()
        return defaultBoxSize(self.particleDiameter.get(),
                              self._precedentsPointer().get().getSamplingRate())

    def _getOutputSet(self):
        """The streaming output, created on first use. Call under self._lock."""
        name = PickOutputs.coordinates.name
        outSet = getattr(self, name, None)
        if outSet is not None:
            outSet.enableAppend()
            return outSet
        precedents = self._precedentsPointer()
        outSet = SetOfCoordinates3D.create(self._getPath(), template='coordinates%s.sqlite')
        outSet.setPrecedents(precedents)
        outSet.setSamplingRate(precedents.get().getSamplingRate())
        outSet.setBoxSize(self.getBoxSize())
        outSet.setStreamState(Set.STREAM_OPEN)
        self._defineOutputs(**{name: outSet})
        self._defineSourceRelation(self.inputTomograms, outSet)
        if self.originalTomograms.get() is not None:
            self._defineSourceRelation(self.originalTomograms, outSet)
        return outSet

    # --------------------------- polarity --------------------------------
    def _inputProducer(self):
        """The protocol that made the picked tomograms, or None when unknown."""
        value = self.inputTomograms.getObjValue()
        if isinstance(value, Protocol):
            return value
        project = self.getProject()
        parentId = value.getObjParentId() if value is not None else None
        if project is None or not parentId:
            return None
        try:
            producer = project.getProtocol(parentId)
        except Exception:  # not in this project's database: unknown
            return None
        return producer if isinstance(producer, Protocol) else None

    def _resolvePolarity(self):
        """'dark' or 'bright': the form's choice, auto resolved (see the param help)."""
        choice = self.polarity.get()
        if choice != POLARITY_AUTO:
            return POLARITY_CHOICES[choice]
        producer = self._inputProducer()
        bright = producer is not None and type(producer).__name__ in BRIGHT_PRODUCERS
        return 'bright' if bright else 'dark'

    def _polarityText(self):
        polarity = self.usedPolarity.get() or self._resolvePolarity()
        if self.polarity.get() == POLARITY_AUTO:
            return '%s (auto)' % polarity
        return polarity

    # --------------------------- info ------------------------------------
    def _validate(self):
        errors = self._validateEngine()
        picked = self.inputTomograms.get()
        errors += self._setErrors(picked, 'Tomograms to pick')
        if errors:
            return errors
        keys = [itemKey(t) for t in picked.iterItems()]
        noTsId = [t.getObjId() for t in picked.iterItems() if not t.getTsId()]
        if noTsId:
            errors.append('Tomograms to pick: %d tomogram(s) have no tsId (e.g. id %d). '
                          'Coordinates, original tomograms and masks are matched by tsId; '
                          'import the tomograms again to get one.'
                          % (len(noTsId), noTsId[0]))
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            errors.append('Tomograms to pick: several tomograms share the tsId %s; each '
                          'needs its own tsId.' % ', '.join(duplicated))
        names = [engineName(k) for k in set(keys)]
        if len(set(names)) < len(names):
            errors.append('Tomograms to pick: some tsIds only differ by spaces or a '
                          'leading underscore; rename them.')

        diameter = self.particleDiameter.get()
        if diameter is None or not diameter > 0:
            errors.append('The particle diameter must be a positive number of Angstrom '
                          '(now %s).' % diameter)
        else:
            samplingRate = picked.getSamplingRate()
            if diameter / samplingRate < MIN_DIAMETER_VOXELS:
                errors.append('A %g A particle spans only %.2f voxels of the picked '
                              'tomograms (%.2f A/px); it must span at least %g voxels: '
                              'pick on less binned tomograms.'
                              % (diameter, diameter / samplingRate, samplingRate,
                                 MIN_DIAMETER_VOXELS))
        if self.selection.get() == SELECT_TOP and not (self.numberOfPicks.get() or 0) >= 1:
            errors.append('The number of picks per tomogram must be at least 1.')
        if self.selection.get() == SELECT_THRESHOLD and self.scoreThreshold.get() is None:
            errors.append('Give a score threshold.')
        for label, value in (('minimum distance', self.minDistance.get()),
                             ('margin', self.margin.get())):
            if value is not None and value < 0:
                errors.append('The %s must be >= 0 A (or empty for the default), not %g.'
                              % (label, value))
        if self.boxSize.get() is not None and self.boxSize.get() < 1:
            errors.append('The box size must be a positive number of pixels (or empty '
                          'for the default), not %d.' % self.boxSize.get())

        errors += self._matchingErrors(keys, self.originalTomograms.get(),
                                       'Original tomograms')
        masks = self.inputMasks.get()
        errors += self._matchingErrors(keys, masks, 'Picking masks')
        if masks is not None and not errors:
            maskItems = self._itemsByKey(masks)
            for tomo in picked.iterItems():
                mask = maskItems[itemKey(tomo)]
                if tuple(mask.getDim()) != tuple(tomo.getDim()):
                    errors.append('Picking masks: the mask of %s is %s voxels but the '
                                  'tomogram is %s; a mask must have the size of its '
                                  'picked tomogram.' % (itemKey(tomo),
                                                        'x'.join(map(str, mask.getDim())),
                                                        'x'.join(map(str, tomo.getDim()))))
        return errors

    def _matchingErrors(self, keys, inputSet, label):
        """A set matched by tsId must be usable and hold every picked tsId."""
        if inputSet is None:
            return []
        errors = self._setErrors(inputSet, label)
        if errors:
            return errors
        available = {itemKey(item) for item in inputSet.iterItems()}
        missing = sorted(set(keys) - available)
        if missing:
            errors.append('%s: no tomogram with the tsId of %d picked tomogram(s): %s. '
                          'They are matched by tsId; every picked tomogram needs one.'
                          % (label, len(missing), ', '.join(missing[:10])
                             + (' ...' if len(missing) > 10 else '')))
        return errors

    def _warnings(self):
        warnings = []
        picked, originals = self.inputTomograms.get(), self.originalTomograms.get()
        if picked is None or originals is None:
            return warnings
        originalItems = self._itemsByKey(originals)
        for tomo in picked.iterItems():
            original = originalItems.get(itemKey(tomo))
            if original is None:
                continue
            extent = np.array(tomo.getDim()) * tomo.getSamplingRate()
            originalExtent = np.array(original.getDim()) * original.getSamplingRate()
            if np.any(np.abs(extent - originalExtent)
                      > EXTENT_TOLERANCE_VOXELS * original.getSamplingRate()):
                warnings.append('%s: the picked tomogram spans %s A but the original %s A: '
                                'are they the same tomogram? Coordinates are converted '
                                'through the sampling rates and origins.'
                                % (itemKey(tomo), ' x '.join('%.0f' % e for e in extent),
                                   ' x '.join('%.0f' % e for e in originalExtent)))
        return warnings

    def _selectionText(self):
        if self.selection.get() == SELECT_TOP:
            return 'the %d best picks per tomogram' % self.numberOfPicks.get()
        return 'the picks scoring at least %g' % self.scoreThreshold.get()

    def _summary(self):
        picked = self.inputTomograms.get()
        if picked is None or self.particleDiameter.get() is None:
            return []
        summary = ['DoG picking of %d tomogram(s) (%.2f A/px) for %g A particles, %s '
                   'contrast, keeping %s.' % (picked.getSize(), picked.getSamplingRate(),
                                              self.particleDiameter.get(),
                                              self._polarityText(), self._selectionText())]
        outSet = getattr(self, PickOutputs.coordinates.name, None)
        if outSet is None:
            summary.append('No coordinates yet.')
            return summary
        perTomo = outSet.aggregate(['COUNT', 'MIN', 'MAX'], '_score', ['_tomoId'])
        summary.append('%d coordinates in %d tomogram(s); box %d px at %.2f A/px.'
                       % (outSet.getSize(), len(perTomo), outSet.getBoxSize(),
                          outSet.getSamplingRate()))
        if self.originalTomograms.get() is not None:
            summary.append('Positions refer to the original tomograms (%.2f A/px), '
                           'converted from the picked ones.' % outSet.getSamplingRate())
        for row in perTomo[:10]:
            summary.append('  %s: %d picks, scores %.3g to %.3g'
                           % (row['_tomoId'], row['COUNT'], row['MIN'], row['MAX']))
        if len(perTomo) > 10:
            summary.append('  ...')
        return summary

    def _methods(self):
        picked = self.inputTomograms.get()
        if picked is None or self.particleDiameter.get() is None:
            return []
        diameter = self.particleDiameter.get()
        minDistance = self.minDistance.get()
        text = ('Particles were picked template-free in %d tomograms (%.2f A/voxel) with '
                'the Difference-of-Gaussians picker of DUAL [Zeng2023DUAL] for %g A '
                'particles (sigma1 = %.1f A, sigma2 = 1.1 sigma1), assuming %s particles; '
                'local maxima closer than %.0f A to a better one were discarded, keeping %s.'
                % (picked.getSize(), picked.getSamplingRate(), diameter,
                   diameter / 2.0 / math.sqrt(3.0),
                   self.usedPolarity.get() or self._resolvePolarity(),
                   minDistance if minDistance is not None else diameter * 24.0 / 28.0,
                   self._selectionText()))
        originals = self.originalTomograms.get()
        if originals is not None:
            text += (' The coordinates were transferred to the original tomograms '
                     '(%.2f A/voxel).' % originals.getSamplingRate())
        return [text]

    def _citations(self):
        return ['Zeng2023DUAL']
