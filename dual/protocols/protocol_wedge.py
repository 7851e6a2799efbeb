import os
from enum import Enum

import pyworkflow.protocol.params as params
import pyworkflow.utils as pwutils
from pyworkflow import BETA
from pyworkflow.utils import Message
from tomo.objects import SetOfTomograms

from dual.constants import TRAINING_DIR
from dual.contract import engine, firstError, sentence
from dual.objects import DualModel
from dual.protocols.protocol_base import ProtDualApplyModel, itemKey, producedContrast
from dual.protocols.protocol_denoise import DENOISED_SUFFIX, denoisedContrast
from dual.protocols.protocol_train import (
    DEFAULTS,
    defineTrainingParams,
    trainingErrors,
    trainingJob,
)

WEDGE_SUFFIX = '_wedge'
TRAINING = 'not useModel'
DENOISED_DIR = 'denoised'  # extra/denoised/: the tomograms denoised first
DENOISING_LABEL = 'Denoise first with'

# Where the tilt range comes from.
RANGE_ACQUISITION, RANGE_GIVEN, RANGE_ESTIMATED = 0, 1, 2
TILT_AXES = engine.TILT_AXES  # the form's choices, in this order


class WedgeOutputs(Enum):
    tomograms = SetOfTomograms
    model = DualModel


class ProtDualWedge(ProtDualApplyModel):
    """Fills the missing wedge of tomograms with DUAL, trained on the tomograms themselves.

    DUAL learns, without any ground truth, to translate the tomograms into copies of
    themselves whose beam axis and in-plane axis are swapped: those copies lack other
    Fourier directions, so the translation supplies what each tomogram's missing cone
    lacks (paper, Fig. 6). Each output keeps its tomogram's measured Fourier
    coefficients unchanged and takes only the missing cone from the translation, with
    a smooth transition at the cone's border. The trained model is an output too, so
    later runs (e.g. on new tomograms of the same kind) can skip the training.

    Raw or denoised tomograms: on phantoms at SNR ~0.1 the filled cone correlates with
    the truth about 0.34 per Fourier shell either way (0.20 before; README, Benchmark).
    With raw tomograms and a denoising model ("Denoise first with"), each tomogram is
    denoised first (extra/denoised/), the model is trained on the denoised tomograms
    and applied to them, and the outputs are the denoised tomograms with their missing
    wedge filled.
    """

    _label = 'missing wedge'
    _devStatus = BETA
    _possibleOutputs = WedgeOutputs
    _modelTask = 'wedge'

    # --------------------------- form ------------------------------------
    def _defineParams(self, form):
        form.addSection(label=Message.LABEL_INPUT)
        form.addParam(
            'inputTomograms',
            params.PointerParam,
            pointerClass='SetOfTomograms',
            important=True,
            label='Tomograms',
            help='Tomograms (tilt axis along Y or X, beam along Z) whose missing '
            'wedge to fill. Without a model, the model is trained on them.\n'
            'Raw tomograms, denoised ones (e.g. from "dual - denoise"), or raw ones with a '
            'denoising model below. Measured on phantoms at SNR ~0.1 (README, '
            'Benchmark): the filled cone\'s mean per-shell correlation with the truth '
            'rose from 0.20 to 0.34 on raw tomograms and to 0.33 denoised first (the '
            'denoiser alone: 0.32), with the flip average.',
        )
        form.addParam(
            'denoisingModel',
            params.PointerParam,
            pointerClass='DualModel',
            allowsNull=True,
            label=DENOISING_LABEL,
            help='Optional: a denoising model (from "dual - train" or "dual - import '
            'model"). Each tomogram is first denoised with it (as "dual - denoise" does, '
            'into extra/%s/), and the missing-wedge model is trained on and applied to '
            'the denoised tomograms: the outputs are the denoised tomograms with their '
            'wedge filled. Empty: the tomograms are used as given (give denoised ones).'
            % DENOISED_DIR,
        )
        form.addParam(
            'useModel',
            params.BooleanParam,
            default=False,
            label='Use a model trained earlier?',
            help='Yes: apply a missing-wedge model from an earlier run of this '
            'protocol instead of training one.',
        )
        form.addParam(
            'inputModel',
            params.PointerParam,
            pointerClass='DualModel',
            condition='useModel',
            allowsNull=True,
            label='Missing-wedge model',
        )
        form.addParam(
            'tiltRangeSource',
            params.EnumParam,
            default=RANGE_ACQUISITION,
            choices=['tomograms\' acquisition', 'given below', 'estimated from the data'],
            display=params.EnumParam.DISPLAY_HLIST,
            label='Tilt range from',
            help='The acquisition\'s minimum and maximum tilt angles, the values '
            'given here, or an estimate from the Fourier amplitudes of the '
            'first tomogram (within a few degrees; with a model trained '
            'earlier, the range it was trained for).',
        )
        line = form.addLine(
            'Tilt range (degrees)',
            condition='tiltRangeSource == %d' % RANGE_GIVEN,
            help='Minimum and maximum tilt angle; asymmetric ranges such as -50, 70 are fine.',
        )
        line.addParam('tiltMin', params.FloatParam, default=DEFAULTS.tilt_range[0], label='min')
        line.addParam('tiltMax', params.FloatParam, default=DEFAULTS.tilt_range[1], label='max')
        form.addParam(
            'tiltAxis',
            params.EnumParam,
            default=0,
            choices=['Y', 'X'],
            display=params.EnumParam.DISPLAY_HLIST,
            label='Tilt axis',
            help='The axis of the tomograms the specimen was tilted about (Y in '
            'most reconstructions).',
        )
        form.addParam(
            'transition',
            params.FloatParam,
            default=engine.TRANSITION_DEGREES,
            expertLevel=params.LEVEL_ADVANCED,
            label='Cone border transition (degrees)',
            help='Inside the cone\'s border the filled coefficients blend in over '
            'this angle, which avoids ringing; measured coefficients are '
            'never changed.',
        )
        # In the Input tab (Advanced, like the transition): a tab of its own would be
        # empty at expert level Normal.
        self._defineFlipParam(
            form,
            self._engineCommand(),
            ' On by default here: on the wedge benchmark it restored the missing cone '
            'better on every test tomogram, raw or denoised first (see the README). With '
            '"%s", the denoiser is averaged too.' % DENOISING_LABEL,
        )
        self._defineTileParam(form)
        defineTrainingParams(form, condition=TRAINING, freshCondition=TRAINING, simulation=False)
        self._defineGpuParams(form)
        form.addParallelSection(threads=1, mpi=0)

    # --------------------------- steps -----------------------------------
    def _engineCommand(self):
        return 'wedge'

    def getOutputContrast(self):
        """Compensation keeps the measured coefficients: the contrast of the tomograms
        compensated, the denoised ones' when the protocol denoises first."""
        if self._denoisesFirst():
            return denoisedContrast(self.denoisingModel.get())
        return producedContrast(self, self.inputTomograms)

    def _denoisesFirst(self):
        return self.denoisingModel.get() is not None

    def _insertInputSteps(self, name):
        if not self._denoisesFirst():
            return []
        return [
            self._insertFunctionStep(
                self.denoiseStep, name, prerequisites=[], needsGPU=self.usesGpu()
            )
        ]

    def _insertModelSteps(self, inputSteps):
        if self.useModel:
            return []
        trainId = self._insertFunctionStep(
            self.trainStep, prerequisites=inputSteps, needsGPU=self.usesGpu()
        )
        return [
            self._insertFunctionStep(self.createModelStep, prerequisites=[trainId], needsGPU=False)
        ]

    def _denoisedFile(self, name):
        """extra/denoised/<name>_denoised.mrc: input `name` denoised by denoiseStep (the
        engine names its output after the input link extra/inputs/<name>.mrc)."""
        return self._getExtraPath(
            DENOISED_DIR, engine.output_name(self._engineInputPath(name), DENOISED_SUFFIX)
        )

    def denoiseStep(self, name):
        """Denoise input `name` with the denoising model, as "dual - denoise" does."""
        gpus = self._stepGpus()
        outdir = self._getExtraPath(DENOISED_DIR)
        pwutils.makePath(outdir)
        job = self._inferenceJob(
            self.denoisingModel.get().getPath(),
            self._engineInputFile(self.inputItems[name], name),
            outdir,
            name,
            gpus,
        )
        job.update(suffix=DENOISED_SUFFIX, flip_average=self.flipAverage.get())
        self.runEngineJob('denoise', job, 'denoise_%s' % name, useGpu=bool(gpus))
        self._setHeaderSamplingRate(
            self._denoisedFile(name), self.inputItems[name].getSamplingRate()
        )

    def _modelInputFile(self, name):
        """The denoised tomogram when the protocol denoises first (denoiseStep made it),
        else the input itself: what the wedge model is trained on and applied to."""
        if self._denoisesFirst():
            return os.path.abspath(self._denoisedFile(name))
        return super()._modelInputFile(name)

    def getInputFile(self, name):
        """The tomogram the wedge model was applied to (for the viewers): the denoised
        one when the protocol denoised first."""
        if self._denoisesFirst():
            return self._denoisedFile(name)
        return super().getInputFile(name)

    def _trainingDir(self):
        return self._getExtraPath(TRAINING_DIR)

    def _modelPath(self):
        if self.useModel:
            return super()._modelPath()
        return os.path.join(self._trainingDir(), engine.MODEL_FILE)

    def _modelSource(self):
        if self.useModel:
            return self.inputModel
        return getattr(self, WedgeOutputs.model.name)

    def _tiltAxis(self):
        return TILT_AXES[self.tiltAxis.get()]

    def _tiltRange(self, tomo=None):
        """(min, max) in degrees for a tomogram (or the set), None to let the engine use
        the model's range or estimate it."""
        source = self.tiltRangeSource.get()
        if source == RANGE_GIVEN:
            return self.tiltMin.get(), self.tiltMax.get()
        if source == RANGE_ACQUISITION:
            acquisition = (tomo or self._getInputSet()).getAcquisition()
            return acquisition.getAngleMin(), acquisition.getAngleMax()
        return None

    def trainStep(self):
        gpus = self._stepGpus()
        job = trainingJob(self, self._trainingDir(), gpus, fresh=True)
        job.update(
            tomograms=[self._modelInputFile(name) for name in self.inputItems],
            input_voxel_size=self._getInputSet().getSamplingRate(),
            tilt_axis=self._tiltAxis(),
            tilt_range=self._tiltRange(),
        )
        self.runEngineJob('wedge-train', job, 'wedge_train', useGpu=bool(gpus))

    def createModelStep(self):
        model = self._dualModelFromFile(self._modelPath())
        self._defineOutputs(**{WedgeOutputs.model.name: model})
        for source in self._trainingSources():
            self._defineSourceRelation(source, model)

    def _trainingSources(self):
        """What the trained model derives from: the tomograms (and the denoiser)."""
        return [self.inputTomograms] + ([self.denoisingModel] if self._denoisesFirst() else [])

    def _outputSources(self):
        sources = super()._outputSources()
        return sources + ([self.denoisingModel] if self._denoisesFirst() else [])

    def _engineJob(self, name, gpus):
        job = super()._engineJob(name, gpus)
        job.update(
            tilt_range=self._tiltRange(self.inputItems[name]),
            tilt_axis=self._tiltAxis(),
            transition=self.transition.get(),
            suffix=WEDGE_SUFFIX,
            flip_average=self.flipAverage.get(),
        )
        return job

    def getOutputFile(self, name):
        """The engine names its output after its input, the link extra/inputs/<name>.mrc
        or the denoised extra/denoised/<name>_denoised.mrc."""
        return self._getExtraPath(engine.output_name(self.getInputFile(name), WEDGE_SUFFIX))

    def createOutputStep(self, tsId):
        self._appendTomogram(tsId, self.getOutputFile(tsId), WedgeOutputs.tomograms.name)

    def getTrainingLogFile(self):
        """The engine's training log (JSON lines) when this run trained the model."""
        return os.path.join(self._trainingDir(), engine.TRAINING_LOG)

    # --------------------------- info ------------------------------------
    def _validate(self):
        if self.useModel:
            if self.inputModel.get() is None:
                return ['Choose the missing-wedge model to use.']
            errors = super()._validate()
        else:
            inputSet = self._getInputSet()
            errors = self._validateEngine() + self._gpuErrors()
            errors += self._setErrors(inputSet, 'Tomograms')
            errors += trainingErrors(self, fresh=True, command='wedge-train')
            if not errors and inputSet is not None:
                errors += self._tooSmallErrors(
                    inputSet, 'Tomograms', self.voxelSize.get(), self.subvolumeSize.get()
                )
        error = engine.check_values('wedge', transition=self.transition.get())
        if error:
            errors.append(sentence(error))
        if self._denoisesFirst() and self._getInputSet() is not None:
            errors += self._modelErrors(
                self.denoisingModel.get(),
                'denoise',
                self._getInputSet(),
                'Tomograms',
                field=DENOISING_LABEL,
            )
        if errors or self._getInputSet() is None:  # pyworkflow reports a missing input
            return errors
        return self._tiltRangeErrors()

    def _tiltRangeErrors(self):
        source = self.tiltRangeSource.get()
        if source == RANGE_ESTIMATED:
            return []
        tomos = list(self._getInputSet().iterItems()) if source == RANGE_ACQUISITION else [None]
        errors = []
        for tomo in tomos:
            where = ('the acquisition of %s' % itemKey(tomo)) if tomo else 'the form'
            tmin, tmax = self._tiltRange(tomo)
            if tmin is None or tmax is None:
                errors.append(
                    '%s has no tilt range: give it in the form, or choose '
                    '"estimated from the data".' % where.capitalize()
                )
            else:
                error = firstError(engine.check_tilt_range, (tmin, tmax))
                if error:
                    errors.append(
                        'The tilt range of %s: %s' % (where, error[0].lower() + error[1:])
                    )
        return errors

    def _warnings(self):
        denoiser = self._undertrainedWarnings(
            self.denoisingModel.get(), 'The denoising model ("%s")' % DENOISING_LABEL
        )
        denoiser += self._flipAxisWarnings()
        if self.useModel:
            return denoiser + super()._warnings()
        warnings = []
        if not self.usesGpu():
            warnings.append('Training on the CPU is very slow: use it for small tests only.')
        return denoiser + warnings + self._tileWarnings()

    def _flipAxisWarnings(self):
        """The engine flips a volume about the tilt axis of the model that processes it
        (the one it was trained with: Y for denoising models from "dual - train"): with
        tomograms tilted about another axis those flips do not keep their wedge."""
        models = [('The denoising model', self.denoisingModel.get())]
        if self.useModel:
            models.append(('The missing-wedge model', self.inputModel.get()))
        warnings = []
        for what, model in models:
            if model is None or not self.flipAverage.get():
                continue
            axis = model.getConfig().get('tilt_axis', engine.DualConfig().tilt_axis)
            if axis != self._tiltAxis():
                warnings.append(
                    '%s was trained for tilt axis %s, the tomograms\' is %s: averaged over '
                    'its flips, which keep a wedge about %s, it sees mirrored wedges.'
                    % (what, axis.upper(), self._tiltAxis().upper(), axis.upper())
                )
        return warnings

    def _unetArchitecture(self):
        if self.useModel:
            return super()._unetArchitecture()
        upsampling = engine.unet_upsampling(engine.DualConfig().upsampling, self._network)
        return self.unetDepth.get(), upsampling

    def _summary(self):
        inputSet = self._getInputSet()
        if inputSet is None:
            return []
        outSet = getattr(self, WedgeOutputs.tomograms.name, None)
        done = outSet.getSize() if outSet is not None else 0
        lines = ['%d of %d tomograms compensated.' % (done, inputSet.getSize())]
        if self._denoisesFirst():
            lines.append('Denoised first with: %s.' % self.denoisingModel.get())
        model = getattr(self, WedgeOutputs.model.name, None) or (
            self.inputModel.get() if self.useModel else None
        )
        if model is not None:
            lines.append('Model: %s.' % model)
        return lines

    def _methods(self):
        inputSet = self._getInputSet()
        if inputSet is None:
            return []
        if self.useModel:
            how = 'a missing-wedge model trained earlier (%s)' % self.inputModel.get()
        else:
            how = (
                'a model trained on these tomograms for %d iterations at %.2f A/voxel '
                'against copies of themselves with the beam axis and the in-plane axis '
                'swapped' % (self.iterations.get(), self.voxelSize.get())
            )
        denoised, whose = '', ''
        if self._denoisesFirst():
            denoised = (
                'The tomograms were first denoised with DUAL, using %s; the missing-wedge '
                'model was %s the denoised tomograms. '
                % (
                    self._modelDescription(self.denoisingModel.get()),
                    'applied to' if self.useModel else 'trained on and applied to',
                )
            )
            whose = ' of the denoised tomograms'
        return [
            'We filled the missing wedge of %d tomograms (%.2f A/voxel, tilt axis %s) '
            'with DUAL [Zeng2023DUAL], using %s. %sThe measured Fourier coefficients%s were '
            'kept; the missing cone was taken from the translated tomogram%s with a '
            '%g-degree transition at its border.'
            % (
                inputSet.getSize(),
                inputSet.getSamplingRate(),
                self._tiltAxis().upper(),
                how,
                denoised,
                whose,
                self._flipMethods(
                    'both networks' if self._denoisesFirst() else 'the translation network'
                ),
                self.transition.get(),
            )
        ]
