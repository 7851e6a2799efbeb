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

import json
import math
import os
from enum import Enum

import numpy as np
import pyworkflow.protocol.params as params
from pyworkflow import BETA
from pyworkflow.object import Set, String
from pyworkflow.protocol import STEPS_PARALLEL
from pyworkflow.utils import Message
from tomo.constants import BOTTOM_LEFT_CORNER
from tomo.objects import Coordinate3D, SetOfCoordinates3D
from tomo.protocols import ProtTomoPicking

from dual.contract import engine, firstError, sentence
from dual.convert import convertPositions, defaultBoxSize
from dual.protocols.protocol_base import ProtDualBase, itemKey, producedContrast

# Polarity choices of the form; the engine measures AUTO on each tomogram.
POLARITY_AUTO, POLARITY_DARK, POLARITY_BRIGHT = 0, 1, 2
POLARITY_CHOICES = ['auto', 'dark', 'bright']
SELECT_TOP, SELECT_THRESHOLD = 0, 1
# A picked and an original tomogram of one tsId should span the same physical size;
# beyond this many original voxels apart, _warnings flags the pair.
EXTENT_TOLERANCE_VOXELS = 4


class PickOutputs(Enum):
    coordinates = SetOfCoordinates3D


def engineName(key):
    """The file prefix and rlnTomoName the engine gets for tomogram `key` (its tsId):
    the tsId itself when the engine accepts it as a name, else the closest such name."""
    return engine.safe_tomo_name(key)


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
        self.pickedItems = None  # {key: picked tomogram}
        self.targetItems = None  # {key: tomogram the coordinates refer to}
        self.maskItems = None  # {key: mask} (empty without masks)
        # The polarity the picks were made with (auto: measured per tomogram at run
        # time; 'mixed: ...' when tomograms differ).
        self.usedPolarity = String()

    # --------------------------- form ------------------------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam(
            'inputTomograms',
            params.PointerParam,
            pointerClass='SetOfTomograms',
            important=True,
            label='Tomograms to pick',
            help='The tomograms the picker looks at: raw, or better denoised '
            '(e.g. by "dual - denoise") and/or binned.',
        )
        form.addParam(
            'originalTomograms',
            params.PointerParam,
            pointerClass='SetOfTomograms',
            allowsNull=True,
            label='Original tomograms (optional)',
            help='The tomograms the coordinates should refer to, when they are not '
            'the picked ones: typically the raw tomograms the picked ones '
            'were denoised from, which subtomogram averaging needs. Matched '
            'by tsId (every picked tomogram needs one); they may have '
            'another voxel size (e.g. picking on a 2x binned copy): '
            'positions are converted through physical coordinates, using '
            'each tomogram\'s sampling rate and origin.\n'
            'Empty: the coordinates refer to the picked tomograms.',
        )
        form.addParam(
            'inputMasks',
            params.PointerParam,
            pointerClass='SetOfTomoMasks',
            allowsNull=True,
            label='Picking masks (optional)',
            help='Pick only where the mask is above 0.5 (e.g. a cytoplasm or '
            'membrane segmentation; for a label map, any label). Matched by '
            'tsId; each mask must have the size of its picked tomogram, '
            'and every picked tomogram needs one.',
        )

        form.addSection(label='Picking')
        form.addParam(
            'particleDiameter',
            params.FloatParam,
            default=None,
            allowsNull=True,  # required: _validate says so, in one message
            important=True,
            label='Particle diameter (A)',
            help='Largest extent of the particle, in Angstrom (e.g. ~280 for '
            'ribosomes). It sets the DoG scale, the default minimum '
            'distance, the default margin and the default box size.',
        )
        form.addParam(
            'polarity',
            params.EnumParam,
            choices=POLARITY_CHOICES,
            default=POLARITY_AUTO,
            display=params.EnumParam.DISPLAY_HLIST,
            label='Particle contrast',
            help='dark: particles darker than the background, as in raw '
            'cryo-ET reconstructions (protein scatters more than ice; most '
            'reconstruction software keeps this contrast).\n'
            'bright: particles brighter than the background, as in '
            'DUAL-denoised tomograms (the denoiser outputs density, '
            'dense = bright), density maps, and the DUAL phantoms.\n'
            'auto (default): measured on each tomogram: particles are rare, '
            'strong blobs at the particle scale, so the sign of the skewness of '
            'the DoG response shows their contrast. When a tomogram does not show '
            'it clearly, the contrast its producer declares is used ("dual - '
            'denoise" and "dual - simulate phantoms": bright), else dark. The log '
            'and the summary say what was used and why.',
        )
        form.addParam(
            'selection',
            params.EnumParam,
            choices=['best N', 'score threshold'],
            default=SELECT_TOP,
            display=params.EnumParam.DISPLAY_HLIST,
            label='Keep',
            help='best N: the N highest-scoring picks of each tomogram.\n'
            'score threshold: all picks scoring at least the threshold.',
        )
        form.addParam(
            'numberOfPicks',
            params.IntParam,
            default=engine.DEFAULT_TOP,
            condition='selection == %d' % SELECT_TOP,
            label='Picks per tomogram (N)',
            help='At most this many picks per tomogram (fewer if the tomogram has fewer peaks).',
        )
        form.addParam(
            'scoreThreshold',
            params.FloatParam,
            default=0.05,
            allowsNull=True,  # required with a threshold: _validate says so, in one message
            condition='selection == %d' % SELECT_THRESHOLD,
            label='Score threshold',
            help='Keep picks whose DoG score is at least this. The score is the '
            'DoG value at the peak of the tomogram scaled to unit standard '
            'deviation, so it does not depend on the grey scale but does '
            'depend on the SNR: denoised tomograms and density maps score '
            'around 0.1-0.2, raw ones around 0.01-0.03. Run once with best '
            'N and look at the score histogram in the viewer to choose it.',
        )
        form.addParam(
            'minDistance',
            params.FloatParam,
            default=None,
            allowsNull=True,
            expertLevel=params.LEVEL_ADVANCED,
            label='Minimum distance (A)',
            help='No two picks closer than this (non-maximum suppression: the '
            'better one is kept). Empty: %g x the diameter, chosen by F1 on the '
            'crowded picking benchmark (the DUAL paper\'s 24/28 dropped touching '
            'neighbours there).' % engine.NMS_FRACTION,
        )
        form.addParam(
            'margin',
            params.FloatParam,
            default=None,
            allowsNull=True,
            expertLevel=params.LEVEL_ADVANCED,
            label='Margin (A)',
            help='Nothing is picked closer than this to a face of the tomogram '
            '(particles cut by the border, and the filter\'s border '
            'artefacts). Empty: %g x the diameter (from the same benchmark: '
            'particles cut by a face are still found).' % engine.MARGIN_FRACTION,
        )

        form.addSection(label='Output')
        form.addParam(
            'boxSize',
            params.IntParam,
            default=None,
            allowsNull=True,
            label='Box size (px)',
            help='Box size stored with the coordinates, in pixels of the '
            'tomograms they refer to (the originals when given). Empty: the '
            'particle diameter in those pixels, rounded up to an even '
            'number. Extraction protocols usually let you change it.',
        )
        form.addParallelSection(threads=3, mpi=0)

    # --------------------------- steps -----------------------------------
    def _insertAllSteps(self):
        self._initialize()
        polarity = self._formPolarity()
        outputSteps = []
        for index, key in enumerate(self.pickedItems, 1):
            pickId = self._insertFunctionStep(
                self.pickStep, key, index, polarity, prerequisites=[], needsGPU=False
            )
            outputSteps.append(
                self._insertFunctionStep(
                    self.createOutputStep, key, prerequisites=[pickId], needsGPU=False
                )
            )
        self._insertFunctionStep(self.closeOutputStep, prerequisites=outputSteps, needsGPU=False)

    def _initialize(self):
        self.pickedItems = {
            itemKey(t): t.clone() for t in self.inputTomograms.get().iterItems(orderBy='id')
        }
        originals = self._itemsByKey(self.originalTomograms.get())
        self.targetItems = {
            key: originals.get(key, tomo) if originals else tomo
            for key, tomo in self.pickedItems.items()
        }
        self.maskItems = self._itemsByKey(self.inputMasks.get())

    @staticmethod
    def _itemsByKey(inputSet):
        """{tsId: item clone} of a set (empty for None)."""
        if inputSet is None:
            return {}
        return {itemKey(item): item.clone() for item in inputSet.iterItems(orderBy='id')}

    def _picksFile(self, key):
        return self._getExtraPath(engineName(key), engineName(key) + engine.PICKS_SUFFIX)

    def _pickSummaryFile(self, key):
        return self._getExtraPath(engineName(key), engineName(key) + engine.PICK_SUMMARY_SUFFIX)

    def getPicksFile(self, key):
        """The engine's picks table of tomogram `key` (picked tomogram's voxels)."""
        return self._picksFile(key)

    def getPickedFile(self, key):
        """The MRC file the engine picked for tomogram `key` (for the viewer)."""
        return self._engineInputPath(engineName(key))

    def pickStep(self, key, index, polarity):
        tomo = self.pickedItems[key]
        name = engineName(key)
        job = dict(
            tomogram=self._engineInputFile(tomo, name),
            outdir=os.path.abspath(self._getExtraPath(name)),
            polarity=polarity,
            fallback_polarity=self._fallbackPolarity(),
            voxel_size=tomo.getSamplingRate(),
            tomo_name=name,
            tomo_index=index,
            threads=self._engineThreads(),
            overwrite=True,  # the step's own tables: a re-run replaces them
            **self._pickSettings(),
        )
        if key in self.maskItems:
            job['mask'] = self._engineInputFile(self.maskItems[key], name + '_mask')
        os.makedirs(self._getExtraPath(name), exist_ok=True)
        self.runEngineJob('pick', job, 'pick_%s' % name)

    def _pickSettings(self):
        """The engine's pick options set in the form (None: the engine's default)."""
        top = self.selection.get() == SELECT_TOP
        return dict(
            diameter=self.particleDiameter.get(),
            top=self.numberOfPicks.get() if top else None,
            threshold=None if top else self.scoreThreshold.get(),
            min_distance=self.minDistance.get(),
            margin=self.margin.get(),
        )

    def createOutputStep(self, key):
        with open(self._pickSummaryFile(key)) as f:
            self.info('%s: %s' % (key, engine.polarity_text(json.load(f))))
        xyz, scores = engine.read_picks_table(self._picksFile(key))
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
        polarities = {}
        for key in self.pickedItems:
            with open(self._pickSummaryFile(key)) as f:
                polarities[key] = json.load(f)['polarity']
        if len(set(polarities.values())) == 1:
            self.usedPolarity.set(polarities.popitem()[1])
        else:
            self.usedPolarity.set(
                'mixed: ' + ', '.join('%s %s' % item for item in sorted(polarities.items()))
            )
        self._store(self.usedPolarity)
        self._closeOutputSet()

    def _precedentsPointer(self):
        """The tomograms the coordinates refer to: the originals when given."""
        return (
            self.originalTomograms
            if self.originalTomograms.get() is not None
            else self.inputTomograms
        )

    def getBoxSize(self):
        """The box size of the output (px of the tomograms the coordinates refer to)."""
        if self.boxSize.get():
            return self.boxSize.get()
        return defaultBoxSize(
            self.particleDiameter.get(), self._precedentsPointer().get().getSamplingRate()
        )

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
    def _formPolarity(self):
        """The engine's polarity: 'auto', 'dark' or 'bright', as chosen in the form."""
        return POLARITY_CHOICES[self.polarity.get()]

    def _fallbackPolarity(self):
        """The contrast auto takes where a tomogram does not show one: what the producing
        protocol declares (getOutputContrast: DUAL's denoiser and phantoms give bright
        particles), else dark, the contrast of raw reconstructions."""
        return producedContrast(self, self.inputTomograms) or 'dark'

    def _polarityText(self):
        if self.polarity.get() != POLARITY_AUTO:
            return self._formPolarity()
        if self.usedPolarity.get():
            return '%s (auto: measured)' % self.usedPolarity.get()
        return 'auto (measured on each tomogram; unclear: %s)' % self._fallbackPolarity()

    # --------------------------- info ------------------------------------
    def _validate(self):
        errors = self._validateEngine()
        picked = self.inputTomograms.get()
        errors += self._setErrors(picked, 'Tomograms to pick')
        if picked is None or errors:  # pyworkflow reports a missing input
            return errors
        keys = [itemKey(t) for t in picked.iterItems()]
        noTsId = [t.getObjId() for t in picked.iterItems() if not t.getTsId()]
        if noTsId:
            errors.append(
                'Tomograms to pick: %d tomogram(s) have no tsId (e.g. id %d). '
                'Coordinates, original tomograms and masks are matched by tsId; '
                'import the tomograms again to get one.' % (len(noTsId), noTsId[0])
            )
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        if duplicated:
            errors.append(
                'Tomograms to pick: several tomograms share the tsId %s; each '
                'needs its own tsId.' % ', '.join(duplicated)
            )
        names = [engineName(k) for k in set(keys)]
        if len(set(names)) < len(names):
            errors.append(
                'Tomograms to pick: some tsIds differ only by characters that '
                'file names and STAR files cannot hold; rename them.'
            )

        settings = self._pickSettings()
        if settings['diameter'] is None:
            errors.append(
                'Give the particle diameter (A), the particle\'s largest extent '
                '(e.g. ~280 for ribosomes).'
            )
        elif self.selection.get() == SELECT_THRESHOLD and settings['threshold'] is None:
            errors.append('Give a score threshold.')
        else:
            error = engine.check_values('pick', **settings)
            if error:
                errors.append(sentence(error))
            else:
                error = firstError(
                    engine.check_diameter, settings['diameter'], picked.getSamplingRate()
                )
                if error:
                    errors.append(error + ' Pick on less binned tomograms.')
        if self.boxSize.get() is not None and self.boxSize.get() < 1:
            errors.append(
                'The box size must be a positive number of pixels (or empty '
                'for the default), not %d.' % self.boxSize.get()
            )

        errors += self._matchingErrors(keys, self.originalTomograms.get(), 'Original tomograms')
        masks = self.inputMasks.get()
        errors += self._matchingErrors(keys, masks, 'Picking masks')
        if masks is not None and not errors:
            maskItems = self._itemsByKey(masks)
            for tomo in picked.iterItems():
                mask = maskItems[itemKey(tomo)]
                if tuple(mask.getDim()) != tuple(tomo.getDim()):
                    errors.append(
                        'Picking masks: the mask of %s is %s voxels but the '
                        'tomogram is %s; a mask must have the size of its '
                        'picked tomogram.'
                        % (
                            itemKey(tomo),
                            'x'.join(map(str, mask.getDim())),
                            'x'.join(map(str, tomo.getDim())),
                        )
                    )
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
            errors.append(
                '%s: no tomogram with the tsId of %d picked tomogram(s): %s. '
                'They are matched by tsId; every picked tomogram needs one.'
                % (
                    label,
                    len(missing),
                    ', '.join(missing[:10]) + (' ...' if len(missing) > 10 else ''),
                )
            )
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
            if np.any(
                np.abs(extent - originalExtent)
                > EXTENT_TOLERANCE_VOXELS * original.getSamplingRate()
            ):
                warnings.append(
                    '%s: the picked tomogram spans %s A but the original %s A: '
                    'are they the same tomogram? Coordinates are converted '
                    'through the sampling rates and origins.'
                    % (
                        itemKey(tomo),
                        ' x '.join('%.0f' % e for e in extent),
                        ' x '.join('%.0f' % e for e in originalExtent),
                    )
                )
        return warnings

    def _selectionText(self):
        if self.selection.get() == SELECT_TOP:
            return 'the %d best picks per tomogram' % self.numberOfPicks.get()
        return 'the picks scoring at least %g' % self.scoreThreshold.get()

    def _summary(self):
        picked = self.inputTomograms.get()
        if picked is None or self.particleDiameter.get() is None:
            return []
        summary = [
            'DoG picking of %d tomogram(s) (%.2f A/px) for %g A particles, %s '
            'contrast, keeping %s.'
            % (
                picked.getSize(),
                picked.getSamplingRate(),
                self.particleDiameter.get(),
                self._polarityText(),
                self._selectionText(),
            )
        ]
        outSet = getattr(self, PickOutputs.coordinates.name, None)
        if outSet is None:
            summary.append('No coordinates yet.')
            return summary
        perTomo = outSet.aggregate(['COUNT', 'MIN', 'MAX'], '_score', ['_tomoId'])
        summary.append(
            '%d coordinates in %d tomogram(s); box %d px at %.2f A/px.'
            % (outSet.getSize(), len(perTomo), outSet.getBoxSize(), outSet.getSamplingRate())
        )
        if self.originalTomograms.get() is not None:
            summary.append(
                'Positions refer to the original tomograms (%.2f A/px), '
                'converted from the picked ones.' % outSet.getSamplingRate()
            )
        for row in perTomo[:10]:
            summary.append(
                '  %s: %d picks, scores %.3g to %.3g'
                % (row['_tomoId'], row['COUNT'], row['MIN'], row['MAX'])
            )
        if len(perTomo) > 10:
            summary.append('  ...')
        return summary

    def _methods(self):
        picked = self.inputTomograms.get()
        if picked is None or self.particleDiameter.get() is None:
            return []
        diameter = self.particleDiameter.get()
        minDistance = self.minDistance.get()
        text = (
            'Particles were picked template-free in %d tomograms (%.2f A/voxel) with '
            'the Difference-of-Gaussians picker of DUAL [Zeng2023DUAL] for %g A '
            'particles (sigma1 = %.1f A, sigma2 = 1.1 sigma1), assuming %s particles; '
            'local maxima closer than %.0f A to a better one were discarded, keeping %s.'
            % (
                picked.getSize(),
                picked.getSamplingRate(),
                diameter,
                diameter / 2.0 / math.sqrt(3.0),
                self._polarityText(),
                minDistance if minDistance is not None else diameter * 24.0 / 28.0,
                self._selectionText(),
            )
        )
        originals = self.originalTomograms.get()
        if originals is not None:
            text += (
                ' The coordinates were transferred to the original tomograms '
                '(%.2f A/voxel).' % originals.getSamplingRate()
            )
        return [text]

    def _citations(self):
        return ['Zeng2023DUAL']
